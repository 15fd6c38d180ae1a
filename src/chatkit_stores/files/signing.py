"""HMAC-SHA256 signed URLs bound to method, tenant, attachment and expiry.

A :class:`Signer` holds one or more secrets: URLs are signed with the first and accepted with
any, so a secret rotates without breaking the URLs in flight (put the new secret first, keep
the old one listed until the longest-lived URL signed with it has expired, then drop it). Each
URL names its secret by a key id (``k``, an HMAC of a fixed label under the secret: it reveals
nothing about the secret), so a URL signed with a secret no longer listed is refused as such.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from ..exceptions import SignatureError as SignatureError  # with its audit outcome

SECRET_ENV = "CHATKIT_STORES_SECRET"
"""The current signing secret, when ``secret=`` is not given."""
OLD_SECRETS_ENV = "CHATKIT_STORES_OLD_SECRETS"
"""Earlier secrets still accepted, comma-separated, when ``secret=`` is not given."""
MIN_SECRET_BYTES = 32
_KEY_ID_LABEL = b"chatkit-stores signing key id"

Secret = str | bytes
Secrets = Secret | Sequence[Secret]
"""``secret=``: one secret, or a list whose first signs and all of which verify."""


@dataclass(frozen=True)
class Grant:
    """What a verified URL allows: one method on one tenant's attachment."""

    method: str
    tenant: str
    attachment_id: str


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CHATKIT_STORES_SECRET`` then each of ``CHATKIT_STORES_OLD_SECRETS``; empty if unset."""
    env = os.environ if environ is None else environ
    current = env.get(SECRET_ENV) or ""
    old = [s.strip() for s in (env.get(OLD_SECRETS_ENV) or "").split(",") if s.strip()]
    return [current, *old] if current else []


def check_secrets(secret: Secrets | None) -> list[bytes]:
    """The secrets as keys, first the one that signs; ``ValueError`` naming what is wrong."""
    if secret is None:
        given: list[Secret] = list(secrets_from_env())
        if not given:
            raise ValueError(
                f"A signing secret is required: pass secret=... or set {SECRET_ENV} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    elif isinstance(secret, str | bytes):
        given = [secret]
    else:
        given = list(secret)
        if not given:
            raise ValueError(
                "secret= is an empty list: give at least one signing secret "
                "(the first signs URLs, every one listed is accepted)"
            )
    keys = [s.encode() if isinstance(s, str) else bytes(s) for s in given]
    for position, key in enumerate(keys):
        if not key:
            raise ValueError(f"A signing secret is required: secret number {position + 1} is empty")
        if len(key) < MIN_SECRET_BYTES:
            which = "The signing secret" if len(keys) == 1 else f"Signing secret {position + 1}"
            raise ValueError(f"{which} must be at least {MIN_SECRET_BYTES} bytes")
    return keys


class Signer:
    """Signs ``(method, tenant, attachment_id, expires)`` with the first secret; verifies with
    any of them (see the module docstring for rotation)."""

    def __init__(self, secret: Secrets | None = None) -> None:
        keys = check_secrets(secret)
        self._keys = {_key_id(key): key for key in reversed(keys)}  # the first wins a clash
        self._key_id = _key_id(keys[0])
        self._key = keys[0]

    @property
    def key_ids(self) -> list[str]:
        """The ids of the accepted secrets, the signing one first."""
        return [self._key_id, *(k for k in self._keys if k != self._key_id)]

    def query(self, grant: Grant, ttl_seconds: int, now: float | None = None) -> str:
        """Return the query string (``t=...&e=...&k=...&s=...``) that grants ``grant`` for
        ``ttl``, signed with the first secret."""
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        tenant = base64.urlsafe_b64encode(grant.tenant.encode()).decode().rstrip("=")
        signature = _sign(self._key, grant, expires)
        return urlencode({"t": tenant, "e": expires, "k": self._key_id, "s": signature})

    def verify(
        self, method: str, attachment_id: str, params: dict[str, str], now: float | None = None
    ) -> Grant:
        """Return the grant a request's query parameters carry, or raise ``SignatureError``.

        A URL without a key id (signed before key ids existed) is tried with every secret.
        """
        try:
            tenant = base64.urlsafe_b64decode(params["t"] + "=" * (-len(params["t"]) % 4)).decode()
            expires = int(params["e"])
            signature = params["s"]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise SignatureError("missing or malformed signature") from exc
        key_id = params.get("k")
        if key_id is None:
            keys = list(self._keys.values())
        elif key_id in self._keys:
            keys = [self._keys[key_id]]
        else:
            raise SignatureError(
                "signed with a secret that is no longer accepted (rotated out); ask for a new URL"
            )
        grant = Grant(method, tenant, attachment_id)
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        given = signature.encode("utf-8", "replace")
        if not any(
            [hmac.compare_digest(given, _sign(key, grant, expires).encode()) for key in keys]
        ):
            raise SignatureError("bad signature")
        if expires < (now if now is not None else time.time()):
            raise SignatureError("expired URL")
        return grant


def _key_id(key: bytes) -> str:
    """A short public name of a secret: an HMAC of a fixed label (reveals nothing of it)."""
    digest = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode()


def _sign(key: bytes, grant: Grant, expires: int) -> str:
    message = "\n".join(
        [grant.method.upper(), quote(grant.tenant), quote(grant.attachment_id), str(expires)]
    )
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
