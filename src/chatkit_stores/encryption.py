"""Encryption at rest of the stored JSON blobs: AES-256-GCM under a key ring, bound to each row.

A store built with ``encryption=KeyRing(...)`` keeps the ``data`` of every thread, item and
attachment row as an *envelope* instead of plaintext JSON::

    ckenc:1:<key id>:<base64 of nonce (12 bytes), ciphertext, tag (16 bytes)>

``1`` is the envelope version: ``1`` seals the JSON's UTF-8 bytes, ``2`` the same bytes deflated
first (``KeyRing(..., compress=True)``); every ring opens both. The key id names the key of the
ring that sealed it (so rows stay readable after the current key changes). Plaintext JSON
starts with ``{``, never with ``ckenc:``, so one table can hold both: rows written before
encryption was turned on stay readable, and ``chatkit-stores rekey`` seals them. A store
without keys refuses an envelope with :class:`MissingKeyError` instead of handing ciphertext to
pydantic.

The associated data of each envelope is its header and the row it belongs to: the table
(``threads``, ``items``, ``attachments``, without the table prefix, so ``copy`` between
prefixes keeps rows readable), the tenant and the row's ids. A blob copied into another row or
another tenant, or altered in any way, fails authentication: :class:`TamperedDataError`, never
another row's data.

Keys come from the constructor or from ``CHATKIT_STORES_ENCRYPTION_KEYS``: comma-separated
``id:key`` pairs, each key 32 bytes in base64 (standard or URL-safe alphabet), the current key
first, e.g. ``k2:9x...=,k1:Qb...=``. :func:`new_key` makes a key.

Nonces are 96 random bits per write, so a key should seal far fewer than 2**32 blobs (NIST's
bound for random GCM nonces): rotate keys long before that.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

ENVIRONMENT_VARIABLE = "CHATKIT_STORES_ENCRYPTION_KEYS"
"""Where :meth:`KeyRing.from_env` reads the keys: ``id:base64key`` pairs, current first."""

PREFIX = "ckenc:"
"""How every envelope starts (plaintext JSON starts with ``{``)."""

VERSION = 1
"""The envelope version of the JSON's UTF-8 bytes, sealed as they are."""

DEFLATED = 2
"""The envelope version of a ring that deflates: one byte, ``z`` (then the JSON's UTF-8 bytes
deflated, zlib format) or ``=`` (then the bytes as they are: shorter than ``DEFLATE_FROM``)."""

DEFLATE_FROM = 1024
"""Texts shorter than this (in UTF-8 bytes) are sealed as they are even by a deflating ring:
deflating costs a few microseconds whatever the size and saves little on short rows."""

CACHE_BYTES = 8 * 2**20
"""How much of what a key ring sealed and opened lately it keeps by default (characters of
envelopes and their text): 8 MiB, a few thousand chat messages."""

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
INSTALL_HINT = "encryption needs the cryptography package: pip install 'chatkit-stores[encryption]'"

_VERSIONS = (f"{VERSION}:", f"{DEFLATED}:")
_HEADER_LENGTH = len(PREFIX) + 2  # "ckenc:1:"
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_ID_FIELDS = {"threads": ("id",), "items": ("thread_id", "id"), "attachments": ("id",)}


class EncryptionError(Exception):
    """A stored blob cannot be opened; nothing of it was returned."""


class MissingKeyError(EncryptionError):
    """The blob is sealed with a key this store does not hold (or the store holds no keys)."""


class TamperedDataError(EncryptionError):
    """The blob fails authentication: altered, or copied from another row or tenant."""


def new_key() -> str:
    """A new random 256-bit key in base64, for a key ring or the environment variable."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def is_encrypted(blob: str) -> bool:
    """Whether a stored ``data`` value is an envelope (not plaintext JSON)."""
    return blob.startswith(PREFIX)


def key_id_of(blob: str) -> str | None:
    """The key id an envelope names; None for plaintext JSON (or an unreadable envelope)."""
    if not blob.startswith(PREFIX) or blob[len(PREFIX) : _HEADER_LENGTH] not in _VERSIONS:
        return None
    end = blob.find(":", _HEADER_LENGTH)
    return blob[_HEADER_LENGTH:end] if end > _HEADER_LENGTH else None


def describe(table: str, tenant: str, *ids: str) -> str:
    """``items row tenant='u1' thread_id='thr_1' id='msg_1'``, for error messages."""
    names = _ID_FIELDS.get(table, ("id",) * len(ids))
    fields = " ".join(f"{name}={value!r}" for name, value in zip(names, ids, strict=False))
    return f"{table} row tenant={tenant!r} {fields}"


def open_plain(blob: str, table: str, tenant: str, *ids: str) -> str:
    """``blob`` for a store without keys: plaintext JSON as is; an envelope is refused."""
    if blob.startswith(PREFIX):
        raise MissingKeyError(
            f"The data of {describe(table, tenant, *ids)} is encrypted (key "
            f"{key_id_of(blob)!r}) and this store has no encryption keys: build it with "
            f"encryption=KeyRing(...) or KeyRing.from_env() ({ENVIRONMENT_VARIABLE})"
        )
    return blob


class KeyRing:
    """AES-256-GCM keys by id, one of them current: seals with the current key, opens with any.

    ``keys`` maps key ids (1-32 of ``A-Z a-z 0-9 _ . -``) to 32-byte keys, as ``bytes`` or
    base64 text; ``current`` defaults to the first. Raises ``ValueError`` for a malformed id or
    key, and ``ImportError`` naming the extra when ``cryptography`` is not installed.

    The ring remembers the text of the envelopes it sealed and opened lately, up to
    ``cache_bytes`` (envelopes and text together; 0 turns it off), keyed by the whole envelope
    and its row: reading a row again costs a lookup instead of a decryption, and only an
    envelope that is byte for byte one this ring authenticated for that very row is answered
    from memory (a tampered or copied one is a different key, and is decrypted and refused).

    With ``compress=True`` it deflates the JSON before sealing it (envelope version 2): rows
    about as small as the database keeps plaintext JSON, at the price of showing how well each
    row compresses, not only its length (docs/encryption.md).
    """

    def __init__(
        self,
        keys: Mapping[str, bytes | str],
        *,
        current: str | None = None,
        cache_bytes: int = CACHE_BYTES,
        compress: bool = False,
    ) -> None:
        aesgcm = _aesgcm_class()
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self._ciphers: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError(
                    f"key id {key_id!r} must be 1 to 32 of the characters A-Z a-z 0-9 _ . -"
                )
            self._ciphers[key_id] = aesgcm(_key_bytes(key_id, key))
        self._current = next(iter(keys)) if current is None else current
        if self._current not in self._ciphers:
            raise ValueError(f"current key {self._current!r} is not one of the keys {self.ids}")
        self._compress = compress
        self._header = f"{PREFIX}{DEFLATED if compress else VERSION}:{self._current}:"
        self._current_headers = (
            (self._header,)
            if compress
            else tuple(f"{PREFIX}{version}{self._current}:" for version in _VERSIONS)
        )
        self.cache_bytes = cache_bytes
        self._known: dict[tuple[str, ...], str] = {}  # (envelope, table, tenant, *ids) -> text
        self._known_bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        source: str = "the key list",
        cache_bytes: int = CACHE_BYTES,
        compress: bool = False,
    ) -> KeyRing:
        """The ring described by ``id:base64key`` pairs separated by commas, current first."""
        keys: dict[str, str] = {}
        for entry in filter(None, (part.strip() for part in text.split(","))):
            key_id, colon, key = entry.partition(":")
            if not colon:
                raise ValueError(f"{source}: {key_id[:32]!r}... is not an id:base64key pair")
            if key_id.strip() in keys:
                raise ValueError(f"{source}: key id {key_id.strip()!r} appears twice")
            keys[key_id.strip()] = key.strip()
        if not keys:
            raise ValueError(f"{source} names no keys (expected id:base64key,...)")
        try:
            return cls(keys, cache_bytes=cache_bytes, compress=compress)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def from_env(
        cls,
        variable: str = ENVIRONMENT_VARIABLE,
        environ: Mapping[str, str] | None = None,
        *,
        cache_bytes: int = CACHE_BYTES,
        compress: bool = False,
    ) -> KeyRing:
        """The ring in the environment variable (``id:base64key,...``, current first)."""
        text = (os.environ if environ is None else environ).get(variable, "")
        if not text.strip():
            raise ValueError(f"{variable} is not set (expected id:base64key,..., current first)")
        return cls.parse(text, source=variable, cache_bytes=cache_bytes, compress=compress)

    @property
    def current(self) -> str:
        """The id of the key that seals (fixed: build another ring to rotate)."""
        return self._current

    @property
    def compress(self) -> bool:
        """Whether this ring deflates what it seals (envelope version 2)."""
        return self._compress

    @property
    def header(self) -> str:
        """How the envelopes this ring seals start: ``ckenc:<version>:<current key>:``."""
        return self._header

    @property
    def current_headers(self) -> tuple[str, ...]:
        """The headers ``rekey`` leaves alone: the current key's (deflated, with ``compress``)."""
        return self._current_headers

    @property
    def ids(self) -> list[str]:
        """The key ids, in the order given."""
        return list(self._ciphers)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ciphers

    def __repr__(self) -> str:
        return f"KeyRing(ids={self.ids!r}, current={self.current!r}, compress={self.compress})"

    def seal(self, text: str, table: str, tenant: str, *ids: str) -> str:
        """The envelope of ``text`` under the current key, bound to the row."""
        header = self._header
        nonce = os.urandom(NONCE_BYTES)
        data = text.encode("utf-8")
        if self._compress:
            data = b"z" + zlib.compress(data, 1) if len(data) >= DEFLATE_FROM else b"=" + data
        sealed = self._ciphers[self._current].encrypt(
            nonce, data, _associated(header, table, tenant, ids)
        )
        blob = header + binascii.b2a_base64(nonce + sealed, newline=False).decode("ascii")
        self._remember((blob, table, tenant, *ids), text)
        return blob

    def open(self, blob: str, table: str, tenant: str, *ids: str) -> str:
        """The text in ``blob`` if it is an envelope of this row; plaintext JSON as is."""
        if not blob.startswith(PREFIX):
            return blob
        row = (blob, table, tenant, *ids)
        text = self._known.get(row)
        if text is None:
            text = self._decrypt(blob, table, tenant, ids)
            self._remember(row, text)
        return text

    def _decrypt(self, blob: str, table: str, tenant: str, ids: tuple[str, ...]) -> str:
        """The text of an envelope of this row, authenticated, or raise naming the row."""
        # pages open every row: the usual case is a few slices and lookups, the rest is errors
        version = blob[len(PREFIX) : _HEADER_LENGTH]
        end = blob.find(":", _HEADER_LENGTH)
        key_id = blob[_HEADER_LENGTH:end] if end > 0 and version in _VERSIONS else ""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise self._unopenable(blob, table, tenant, ids)
        try:  # not validated here: the tag authenticates the bytes that come out
            raw = binascii.a2b_base64(blob[end + 1 :])
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise TamperedDataError(
                f"The data of {describe(table, tenant, *ids)} is not a valid envelope "
                "(truncated or not base64): it was altered"
            )
        try:
            plain: bytes = cipher.decrypt(
                raw[:NONCE_BYTES],
                raw[NONCE_BYTES:],
                _associated(blob[: end + 1], table, tenant, ids),
            )
        except _invalid_tag() as error:
            raise TamperedDataError(
                f"The data of {describe(table, tenant, *ids)} fails authentication under key "
                f"{key_id!r}: it was altered, or copied from another row or tenant"
            ) from error
        if version == _VERSIONS[1]:  # authenticated: sealed so by a holder of the key
            plain = zlib.decompress(plain[1:]) if plain[:1] == b"z" else plain[1:]
        return plain.decode("utf-8")

    def _remember(self, row: tuple[str, ...], text: str) -> None:
        """Keep ``text`` as what the envelope ``row[0]`` of that row holds, oldest out first."""
        size = len(row[0]) + len(text)
        if size > self.cache_bytes // 8:  # off, or one row would crowd out the rest
            return
        with self._lock:  # a ring may serve event loops in several threads
            if row in self._known:
                return
            self._known[row] = text
            self._known_bytes += size
            while self._known_bytes > self.cache_bytes:
                oldest = next(iter(self._known))
                self._known_bytes -= len(oldest[0]) + len(self._known.pop(oldest))

    def forget(self, tenant: str | None = None) -> None:
        """Drop the texts the ring keeps: all, or one tenant's (when it is erased)."""
        with self._lock:
            for row in [row for row in self._known if tenant is None or row[2] == tenant]:
                self._known_bytes -= len(row[0]) + len(self._known.pop(row))

    def is_current(self, blob: str) -> bool:
        """Whether ``blob`` is sealed as this ring seals (else ``rekey`` re-seals it)."""
        return blob.startswith(self._current_headers)

    def _unopenable(
        self, blob: str, table: str, tenant: str, ids: Iterable[str]
    ) -> EncryptionError:
        """Why an envelope whose header names no key of this ring cannot be opened."""
        row = describe(table, tenant, *ids)
        if blob[len(PREFIX) : _HEADER_LENGTH] not in _VERSIONS:
            version = blob[len(PREFIX) :].partition(":")[0][:16]
            return EncryptionError(
                f"The data of {row} is an envelope of version {version!r}; this version of "
                f"chatkit-stores reads versions {VERSION} and {DEFLATED}"
            )
        key_id, colon, _ = blob[_HEADER_LENGTH:].partition(":")
        if not colon or not _KEY_ID.fullmatch(key_id):
            return TamperedDataError(f"The data of {row} is not a valid envelope: it was altered")
        return MissingKeyError(
            f"The data of {row} is sealed with key {key_id!r}, which is not in the key ring "
            f"{self.ids}: add it ({ENVIRONMENT_VARIABLE} or KeyRing(...)) until "
            "`chatkit-stores rekey` has re-sealed every row"
        )


def _associated(header: str, table: str, tenant: str, ids: Iterable[str]) -> bytes:
    """What each envelope is bound to: its header, the table, the tenant and the row's ids.

    Each field is preceded by its length, so no two rows have the same associated data
    whatever characters their ids hold.
    """
    text = f"{len(header)}:{header}{len(table)}:{table}{len(tenant)}:{tenant}"
    for part in ids:
        text += f"{len(part)}:{part}"
    return text.encode()


def _key_bytes(key_id: str, key: bytes | str) -> bytes:
    """A key given as bytes or base64 text, checked to be 32 bytes."""
    if isinstance(key, str):
        text = key.strip()
        try:  # either alphabet: "-_" are read as "+/"
            key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


def _aesgcm_class() -> Any:
    """``cryptography``'s AESGCM, imported on first use (the ``encryption`` extra)."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return AESGCM


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


__all__ = [
    "ENVIRONMENT_VARIABLE",
    "EncryptionError",
    "KeyRing",
    "MissingKeyError",
    "TamperedDataError",
    "is_encrypted",
    "key_id_of",
    "new_key",
    "open_plain",
]
