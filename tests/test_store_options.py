"""The options every store shares are declared once and accepted by each store alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatkit_stores import (
    DiskAttachmentStore,
    MemoryStore,
    S3AttachmentStore,
    SQLiteStore,
    Telemetry,
    single_tenant,
)
from chatkit_stores.audit import AuditEvent
from chatkit_stores.base import DEFAULT_MAX_PAGE_SIZE, StoreOptions
from chatkit_stores.blobs import Encrypted
from chatkit_stores.encryption import KeyRing, new_key
from chatkit_stores.files.base import AttachmentOptions

SECRET = "s" * 32


def hook(event: AuditEvent) -> None:
    """An audit hook that does nothing."""


def test_every_store_takes_the_shared_options() -> None:
    resolver, telemetry, keys = single_tenant("one"), Telemetry(), KeyRing({"k1": new_key()})
    options: dict[str, Any] = {
        "tenant": resolver,
        "max_page_size": 7,
        "audit": hook,
        "telemetry": telemetry,
        "thread_conflicts": "raise",
        "encryption": keys,
    }
    assert set(options) == set(StoreOptions.__annotations__)
    for store in (MemoryStore(**options), SQLiteStore(":memory:", **options)):
        assert store.tenant_of({}) == "one"
        assert store.max_page_size == 7
        assert store.audit is hook and store.telemetry is telemetry
        assert store.thread_conflicts == "raise"
        assert isinstance(store.blobs, Encrypted) and store.blobs.keys is keys


def test_memory_store_uses_the_shared_default_page_size() -> None:
    assert MemoryStore().max_page_size == DEFAULT_MAX_PAGE_SIZE
    assert SQLiteStore(":memory:").max_page_size == DEFAULT_MAX_PAGE_SIZE


@pytest.mark.parametrize("kind", ["memory", "sqlite", "disk", "s3"])
def test_an_unknown_option_is_a_type_error(kind: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_pagesize'"):
        if kind == "memory":
            MemoryStore(max_pagesize=5)  # type: ignore[call-arg]
        elif kind == "sqlite":
            SQLiteStore(":memory:", max_pagesize=5)  # type: ignore[call-arg]
        elif kind == "disk":
            DiskAttachmentStore(
                MemoryStore(), tmp_path, base_url="/f", secret=SECRET, max_pagesize=5
            )  # type: ignore[call-arg]
        else:
            S3AttachmentStore(MemoryStore(), "bucket", client=object(), max_pagesize=5)  # type: ignore[call-arg]


def test_attachment_stores_take_audit_and_telemetry(tmp_path: Path) -> None:
    telemetry = Telemetry()
    options: dict[str, Any] = {
        "tenant": single_tenant("one"),
        "max_bytes": 10,
        "allowed_mime_types": ["text/plain"],
        "preview_ttl": 60,
        "upload_ttl": 30,
        "audit": hook,
        "telemetry": telemetry,
    }
    assert set(options) == set(AttachmentOptions.__annotations__)
    disk = DiskAttachmentStore(MemoryStore(), tmp_path, base_url="/f", secret=SECRET, **options)
    s3 = S3AttachmentStore(MemoryStore(), "bucket", client=object(), **options)
    for files in (disk, s3):
        assert files.audit is hook and files.telemetry is telemetry
        assert files.max_bytes == 10 and files.allowed_mime_types == {"text/plain"}
        assert (files.preview_ttl, files.upload_ttl) == (60, 30)


def test_s3_checks_the_shared_ttls_before_linking_the_store() -> None:
    store: MemoryStore[Any] = MemoryStore()
    with pytest.raises(ValueError, match="preview_ttl must be 1 to"):
        S3AttachmentStore(store, "bucket", client=object(), preview_ttl=0)
    assert store.attachment_store is None
