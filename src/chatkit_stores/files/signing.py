"""HMAC-SHA256 signed URLs bound to method, tenant, attachment and expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from ..exceptions import SignatureError as SignatureError  # with its audit outcome

SECRET_ENV = "CHATKIT_STORES_SECRET"
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Grant:
    """What a verified URL allows: one method on one tenant's attachment."""

    method: str
    tenant: str
    attachment_id: str


class Signer:
    """Signs and verifies ``(method, tenant, attachment_id, expires)`` with a secret key."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        secret = secret if secret is not None else os.environ.get(SECRET_ENV)
        if not secret:
            raise ValueError(
                f"A signing secret is required: pass secret=... or set {SECRET_ENV} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"The signing secret must be at least {MIN_SECRET_BYTES} bytes")
        self._key = key

    def query(self, grant: Grant, ttl_seconds: int, now: float | None = None) -> str:
        """Return the query string (``t=...&e=...&s=...``) that grants ``grant`` for ``ttl``."""
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        tenant = base64.urlsafe_b64encode(grant.tenant.encode()).decode().rstrip("=")
        return urlencode({"t": tenant, "e": expires, "s": self._sign(grant, expires)})

    def verify(
        self, method: str, attachment_id: str, params: dict[str, str], now: float | None = None
    ) -> Grant:
        """Return the grant a request's query parameters carry, or raise ``SignatureError``."""
        try:
            tenant = base64.urlsafe_b64decode(params["t"] + "=" * (-len(params["t"]) % 4)).decode()
            expires = int(params["e"])
            signature = params["s"]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise SignatureError("missing or malformed signature") from exc
        grant = Grant(method, tenant, attachment_id)
        expected = self._sign(grant, expires).encode()
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
            raise SignatureError("bad signature")
        if expires < (now if now is not None else time.time()):
            raise SignatureError("expired URL")
        return grant

    def _sign(self, grant: Grant, expires: int) -> str:
        message = "\n".join(
            [grant.method.upper(), quote(grant.tenant), quote(grant.attachment_id), str(expires)]
        )
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
