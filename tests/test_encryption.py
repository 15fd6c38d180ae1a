"""The key ring and its envelopes, with the real ``cryptography`` AES-GCM."""

from __future__ import annotations

import base64
import json

import pytest

from chatkit_stores.encryption import (
    ENVIRONMENT_VARIABLE,
    EncryptionError,
    KeyRing,
    MissingKeyError,
    TamperedDataError,
    is_encrypted,
    key_id_of,
    new_key,
    open_plain,
)

K1, K2 = new_key(), new_key()
ROW = ("items", "tenant-a", "thr_1", "msg_1")
TEXT = json.dumps({"id": "msg_1", "text": "h\u00e9llo \x00 \U0001f600"})


def test_round_trip_and_envelope_shape() -> None:
    ring = KeyRing({"k1": K1})
    blob = ring.seal(TEXT, *ROW)
    assert blob.startswith("ckenc:1:k1:")
    assert is_encrypted(blob) and not is_encrypted(TEXT)
    assert key_id_of(blob) == "k1" and key_id_of(TEXT) is None
    assert "llo" not in blob and "msg_1" not in blob
    assert ring.open(blob, *ROW) == TEXT
    assert ring.seal(TEXT, *ROW) != blob  # a fresh nonce every time


def test_plaintext_json_passes_through() -> None:
    ring = KeyRing({"k1": K1})
    assert ring.open(TEXT, *ROW) == TEXT
    assert open_plain(TEXT, *ROW) == TEXT


@pytest.mark.parametrize(
    "other",
    [
        ("items", "tenant-b", "thr_1", "msg_1"),  # another tenant
        ("items", "tenant-a", "thr_2", "msg_1"),  # another thread
        ("items", "tenant-a", "thr_1", "msg_2"),  # another item
        ("threads", "tenant-a", "msg_1"),  # another table
        ("items", "tenant-a\x00thr_1", "msg_1"),  # fields shifted between tenant and ids
    ],
)
def test_a_blob_copied_to_another_row_fails(other: tuple[str, ...]) -> None:
    ring = KeyRing({"k1": K1})
    blob = ring.seal(TEXT, *ROW)
    with pytest.raises(TamperedDataError, match="copied from another row or tenant"):
        ring.open(blob, *other)


def test_an_altered_blob_fails() -> None:
    ring = KeyRing({"k1": K1})
    blob = ring.seal(TEXT, *ROW)
    head, payload = blob.rsplit(":", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[20] ^= 1
    with pytest.raises(TamperedDataError, match="fails authentication"):
        ring.open(f"{head}:{base64.b64encode(bytes(raw)).decode()}", *ROW)
    with pytest.raises(TamperedDataError, match="not a valid envelope"):
        ring.open(blob[:30], *ROW)
    with pytest.raises(TamperedDataError):  # characters outside base64 are dropped, then
        ring.open(blob[:-4] + "!!!!", *ROW)  # the bytes left fail authentication
    with pytest.raises(TamperedDataError, match="not a valid envelope"):
        ring.open(blob[:-1], *ROW)  # base64 of the wrong length
    with pytest.raises(TamperedDataError, match="not a valid envelope"):
        ring.open("ckenc:1:k1", *ROW)


def test_the_key_id_is_authenticated() -> None:
    """Renaming the key in the header (both keys in the ring) fails instead of decrypting."""
    ring = KeyRing({"k1": K1, "k2": K1})
    blob = ring.seal(TEXT, *ROW)
    with pytest.raises(TamperedDataError):
        ring.open(blob.replace("ckenc:1:k1:", "ckenc:1:k2:"), *ROW)


def test_rotation_keeps_old_rows_readable() -> None:
    old = KeyRing({"k1": K1})
    rotated = KeyRing({"k2": K2, "k1": K1})
    blob = old.seal(TEXT, *ROW)
    assert rotated.current == "k2" and not rotated.is_current(blob)
    assert rotated.open(blob, *ROW) == TEXT
    resealed = rotated.seal(rotated.open(blob, *ROW), *ROW)
    assert key_id_of(resealed) == "k2" and rotated.is_current(resealed)
    with pytest.raises(MissingKeyError, match="key 'k2', which is not in the key ring"):
        old.open(resealed, *ROW)
    assert KeyRing({"k2": K2}).open(resealed, *ROW) == TEXT


def test_a_store_without_keys_refuses_envelopes() -> None:
    blob = KeyRing({"k1": K1}).seal(TEXT, *ROW)
    with pytest.raises(MissingKeyError, match=r"is encrypted \(key 'k1'\) and this store has no"):
        open_plain(blob, *ROW)
    assert "tenant='tenant-a' thread_id='thr_1' id='msg_1'" in _message(open_plain, blob)


def test_a_newer_envelope_version_is_named() -> None:
    with pytest.raises(EncryptionError, match="version '3'; this version of chatkit-stores reads"):
        KeyRing({"k1": K1}).open("ckenc:3:k1:AAAA", *ROW)


def test_keys_from_the_environment() -> None:
    raw = base64.b64decode(K2)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    ring = KeyRing.from_env(environ={ENVIRONMENT_VARIABLE: f" k2:{urlsafe} , k1:{K1},"})
    assert ring.ids == ["k2", "k1"] and ring.current == "k2"
    assert KeyRing({"k2": raw}).open(ring.seal(TEXT, *ROW), *ROW) == TEXT
    assert K1 not in repr(ring) and "k2" in repr(ring)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not set"),
        ("k1", "is not an id:base64key pair"),
        (f"k1:{K1},k1:{K2}", "key id 'k1' appears twice"),
        ("k1:not base64!", "key 'k1' is not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "has 5 bytes; AES-256 needs 32"),
        (f"bad id:{K1}", "key id 'bad id' must be"),
        (" , ", "names no keys"),
    ],
)
def test_a_bad_key_list_is_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        KeyRing.from_env(environ={ENVIRONMENT_VARIABLE: text})
    assert "\n" not in str(caught.value)
    if text.strip(" ,"):
        assert str(caught.value).startswith(ENVIRONMENT_VARIABLE)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing({})
    with pytest.raises(ValueError, match="current key 'k9' is not one of"):
        KeyRing({"k1": K1}, current="k9")
    assert KeyRing({"k1": K1, "k2": K2}, current="k2").current == "k2"


def test_large_blob_round_trip() -> None:
    ring = KeyRing({"k1": K1})
    text = json.dumps({"text": "x" * 5_000_000})
    assert ring.open(ring.seal(text, *ROW), *ROW) == text


def _message(function: object, blob: str) -> str:
    with pytest.raises(EncryptionError) as caught:
        function(blob, *ROW)  # type: ignore[operator]
    return str(caught.value)


class CountingRing(KeyRing):
    """A ring that counts its decryptions."""

    decrypted = 0

    def _decrypt(self, blob: str, table: str, tenant: str, ids: tuple[str, ...]) -> str:
        self.decrypted += 1
        return super()._decrypt(blob, table, tenant, ids)


def test_a_row_read_again_is_not_decrypted_again() -> None:
    ring = CountingRing({"k1": K1})
    blob = ring.seal(TEXT, *ROW)
    copy = blob[:-1] + blob[-1]  # as read from the database: an equal string, not the same
    assert [ring.open(copy, *ROW) for _ in range(3)] == [TEXT] * 3
    assert ring.decrypted == 0  # what it sealed, it knows
    ring.forget()
    assert ring.open(copy, *ROW) == TEXT and ring.open(copy, *ROW) == TEXT
    assert ring.decrypted == 1
    cold = CountingRing({"k1": K1}, cache_bytes=0)
    assert [cold.open(blob, *ROW) for _ in range(3)] == [TEXT] * 3
    assert cold.decrypted == 3


@pytest.mark.parametrize(
    "other",
    [
        ("items", "tenant-b", "thr_1", "msg_1"),
        ("items", "tenant-a", "thr_1", "msg_2"),
        ("threads", "tenant-a", "msg_1"),
    ],
)
def test_a_known_envelope_answers_only_for_its_own_row(other: tuple[str, ...]) -> None:
    ring = KeyRing({"k1": K1})
    blob = ring.seal(TEXT, *ROW)
    assert ring.open(blob, *ROW) == TEXT  # known now
    with pytest.raises(TamperedDataError, match="copied from another row or tenant"):
        ring.open(blob, *other)
    altered = blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]
    with pytest.raises(TamperedDataError):
        ring.open(altered, *ROW)
    assert ring.open(blob, *ROW) == TEXT


def test_the_ring_keeps_at_most_cache_bytes() -> None:
    ring = CountingRing({"k1": K1}, cache_bytes=64 * 1024)
    text = json.dumps({"text": "x" * 1000})
    rows = [("items", "tenant-a", "thr_1", f"msg_{n}") for n in range(1000)]
    blobs = [ring.seal(text, *row) for row in rows]
    assert ring._known_bytes <= 64 * 1024 and 0 < len(ring._known) < 100
    assert all(ring.open(blob, *row) == text for blob, row in zip(blobs, rows, strict=True))
    assert ring.decrypted >= 900 and ring._known_bytes <= 64 * 1024
    kept = sum(len(row[0]) + len(text) for row, text in ring._known.items())
    assert kept == ring._known_bytes
    big = json.dumps({"text": "x" * 10_000})  # over an eighth of the cache: never kept
    ring.forget()
    assert ring.open(ring.seal(big, *ROW), *ROW) == big and not ring._known


def test_forgetting_one_tenant_keeps_the_others() -> None:
    ring = CountingRing({"k1": K1})
    other = ("items", "tenant-b", "thr_1", "msg_1")
    mine, theirs = ring.seal(TEXT, *ROW), ring.seal(TEXT, *other)
    ring.forget("tenant-a")
    assert ring.open(theirs, *other) == TEXT and ring.decrypted == 0
    assert ring.open(mine, *ROW) == TEXT and ring.decrypted == 1


def test_a_deflated_envelope_is_smaller_and_any_ring_opens_it() -> None:
    text = json.dumps({"text": "the same words again " * 200})
    deflating, plain = KeyRing({"k1": K1}, compress=True), KeyRing({"k1": K1}, cache_bytes=0)
    small, large = deflating.seal(text, *ROW), plain.seal(text, *ROW)
    assert small.startswith("ckenc:2:k1:") and large.startswith("ckenc:1:k1:")
    assert len(small) < len(text) / 10 < len(large) / 10
    assert key_id_of(small) == "k1" and is_encrypted(small)
    assert plain.open(small, *ROW) == text and deflating.open(large, *ROW) == text
    cold = KeyRing({"k1": K1}, cache_bytes=0, compress=True)
    assert cold.open(small, *ROW) == text
    short = cold.seal(TEXT, *ROW)  # under DEFLATE_FROM: sealed as it is, in a version 2 envelope
    assert short.startswith("ckenc:2:k1:") and plain.open(short, *ROW) == TEXT
    assert len(short) <= len(plain.seal(TEXT, *ROW)) + 4  # one byte more, in base64
    with pytest.raises(TamperedDataError, match="copied from another row"):
        cold.open(small, "items", "tenant-b", "thr_1", "msg_1")


def test_the_compression_flag_is_authenticated() -> None:
    ring = KeyRing({"k1": K1}, compress=True, cache_bytes=0)
    blob = ring.seal(TEXT, *ROW)
    for other in ("ckenc:1:", "ckenc:3:"):
        with pytest.raises(EncryptionError):  # version 1: tag fails; 3: unknown version
            ring.open(other + blob[len(other) :], *ROW)


def test_what_rekey_leaves_alone() -> None:
    deflating, plain = KeyRing({"k1": K1}, compress=True), KeyRing({"k1": K1})
    small, large = deflating.seal(TEXT, *ROW), plain.seal(TEXT, *ROW)
    assert plain.is_current(small) and plain.is_current(large)  # never inflates a row
    assert deflating.is_current(small) and not deflating.is_current(large)  # deflates old rows
    rotated = KeyRing({"k2": K2, "k1": K1}, compress=True)
    assert not rotated.is_current(small)
