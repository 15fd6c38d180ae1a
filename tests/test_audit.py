"""Audit events: exactly which ones each sensitive operation emits, and never any content."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from chatkit.types import FileAttachment, InferenceOptions, ThreadMetadata, UserMessageItem
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import (
    AuditError,
    AuditEvent,
    DiskAttachmentStore,
    MemoryStore,
    SQLStore,
    TenantError,
    UploadRejected,
)
from chatkit_stores.audit import (
    ATTACHMENT_DELETE,
    BYTES_DELETE,
    BYTES_READ,
    BYTES_UPLOAD,
    THREAD_DELETE,
)
from conftest import TEST_PREFIX

CANARY = "canary-\u2603-7f3a9c"
"""Put in every piece of content; must never appear in an audit event or log line."""
SECRET = "audit-secret-" + "x" * 32
STORE_KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]
INSTRUMENTED_KINDS = STORE_KINDS
"""Stores whose metadata store itself is instrumented (all of them)."""
needs_instrumented_store = pytest.mark.parametrize("store", INSTRUMENTED_KINDS, indirect=True)


@pytest_asyncio.fixture(params=STORE_KINDS, name="store")
async def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A metadata store of each kind (SQL stores share the test tables: use fresh tenants)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url = (
        f"sqlite:///{tmp_path / 'audit.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue(f"{request.param}_url")
    )
    sql = SQLStore.from_url(url, table_prefix=TEST_PREFIX)
    yield sql
    await sql.close()


@pytest.fixture
def events() -> list[AuditEvent]:
    return []


@pytest.fixture
def disk(store: Any, tmp_path: Path, events: list[AuditEvent]) -> DiskAttachmentStore[Any]:
    """A disk attachment store linked to ``store``; the hook is set on the metadata store."""
    store.audit = events.append
    return DiskAttachmentStore(
        store,
        tmp_path / "files",
        base_url="http://test/files",
        secret=SECRET,
        max_bytes=1024,
        allowed_mime_types={"text/plain"},
    )


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex}"


def summary(events: list[AuditEvent]) -> list[tuple[Any, ...]]:
    """What the tests compare: everything but the timestamp."""
    return [
        (e.action, e.outcome, e.tenant, e.store, e.via, e.thread_id, e.attachment_id, e.error)
        for e in events
    ]


def assert_no_content(events: list[AuditEvent], caplog: pytest.LogCaptureFixture) -> None:
    assert events, "the test emitted events"
    for event in events:
        assert CANARY not in repr(event)
    assert caplog.records, "audit records were logged"
    assert CANARY not in caplog.text


async def thread_with_content(store: Any, disk: DiskAttachmentStore[Any], ctx: Any) -> Any:
    """A thread titled, written and with an uploaded file named with the canary."""
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", title=CANARY, created_at=datetime.now())
    await store.save_thread(thread, ctx)
    upload = await disk.upload(
        CANARY.encode(), name=f"{CANARY}.txt", mime_type="text/plain", context=ctx
    )
    upload.thread_id = thread.id
    await store.save_attachment(upload, ctx)
    item = UserMessageItem(
        id=f"msg_{uuid.uuid4().hex}",
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[{"type": "input_text", "text": CANARY}],
        attachments=[upload],
        inference_options=InferenceOptions(),
    )
    await store.add_thread_item(thread.id, item, ctx)
    return thread, upload


@pytest.fixture(autouse=True)
def audit_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chatkit_stores.audit")


@needs_instrumented_store
async def test_delete_thread_deletes_then_reports_bytes_and_thread(
    store: Any,
    disk: DiskAttachmentStore[Any],
    events: list[AuditEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    who = tenant()
    ctx = {"tenant_id": who}
    thread, upload = await thread_with_content(store, disk, ctx)
    name, disk_name = type(store).__name__, "DiskAttachmentStore"
    assert summary(events) == [(BYTES_UPLOAD, "ok", who, disk_name, "call", None, upload.id, None)]
    events.clear()

    await store.delete_thread(thread.id, ctx)

    assert summary(events) == [
        (BYTES_DELETE, "ok", who, disk_name, THREAD_DELETE, None, upload.id, None),
        (THREAD_DELETE, "ok", who, name, "call", thread.id, None, None),
    ]
    assert all(e.at.tzinfo is timezone.utc for e in events)
    assert_no_content(events, caplog)
    record = next(r for r in caplog.records if getattr(r, "audit_event", None) == events[-1])
    assert record.name == "chatkit_stores.audit" and record.levelno == logging.INFO
    assert THREAD_DELETE in record.getMessage() and thread.id in record.getMessage()


@needs_instrumented_store
async def test_metadata_delete_and_a_context_without_tenant(
    store: Any, events: list[AuditEvent], caplog: pytest.LogCaptureFixture
) -> None:
    store.audit = events.append
    who = tenant()
    attachment = FileAttachment(id=f"atc_{uuid.uuid4().hex}", name=CANARY, mime_type="text/plain")
    await store.save_attachment(attachment, {"tenant_id": who})
    await store.delete_attachment(attachment.id, {"tenant_id": who})
    await store.delete_attachment("atc_missing", {"tenant_id": who})
    with pytest.raises(TenantError):
        await store.delete_thread("thr_x", {"no": "tenant"})
    name = type(store).__name__
    assert summary(events) == [
        (ATTACHMENT_DELETE, "ok", who, name, "call", None, attachment.id, None),
        (ATTACHMENT_DELETE, "ok", who, name, "call", None, "atc_missing", None),
        (THREAD_DELETE, "denied", None, name, "call", "thr_x", None, "TenantError"),
    ]
    assert_no_content(events, caplog)


@needs_instrumented_store
async def test_a_failing_hook_raises_after_the_delete_took_effect(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[AuditEvent] = []

    async def failing(event: AuditEvent) -> None:  # async hooks are awaited
        calls.append(event)
        raise ConnectionError("audit sink is down")

    store.audit = failing
    ctx = {"tenant_id": tenant()}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now())
    await store.save_thread(thread, ctx)
    with pytest.raises(AuditError) as raised:
        await store.delete_thread(thread.id, ctx)
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert raised.value.event == calls[0] and calls[0].action == THREAD_DELETE
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, ctx)  # the delete was complete before the hook ran
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "audit hook failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None

    with pytest.raises(TenantError):  # the operation's own error is never replaced
        await store.delete_thread(thread.id, {})
    assert [e.outcome for e in calls] == ["ok", "denied"]


@needs_instrumented_store
async def test_a_failing_hook_on_cascaded_bytes_still_reports_the_thread(
    store: Any, disk: DiskAttachmentStore[Any], events: list[AuditEvent]
) -> None:
    def fail_on_bytes(event: AuditEvent) -> None:
        events.append(event)
        if event.action == BYTES_DELETE:
            raise RuntimeError("sink refused")

    ctx = {"tenant_id": tenant()}
    thread, upload = await thread_with_content(store, disk, ctx)
    store.audit = fail_on_bytes
    events.clear()
    with pytest.raises(AuditError) as raised:
        await store.delete_thread(thread.id, ctx)
    assert raised.value.event.action == BYTES_DELETE
    assert [e.action for e in events] == [BYTES_DELETE, THREAD_DELETE]
    with pytest.raises(NotFoundError):
        await disk.read(upload.id, ctx)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, ctx)


async def test_reads_uploads_and_deletes_of_bytes(
    store: Any,
    disk: DiskAttachmentStore[Any],
    events: list[AuditEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    who = tenant()
    ctx = {"tenant_id": who}
    upload = await disk.upload(b"hello", name=CANARY, mime_type="text/plain", context=ctx)
    assert await disk.read(upload.id, ctx) == b"hello"
    assert [chunk async for chunk in disk.open(upload.id, ctx)] == [b"hello"]
    with pytest.raises(NotFoundError):
        await disk.read("atc_missing", ctx)
    with pytest.raises(UploadRejected):
        await disk.upload(b"x" * 2000, name=CANARY, mime_type="text/plain", context=ctx)
    with pytest.raises(UploadRejected):
        await disk.upload(b"x", name=CANARY, mime_type="image/svg+xml", context=ctx)
    await disk.delete_attachment(upload.id, ctx)
    with pytest.raises(TenantError):
        await disk.delete_attachment(upload.id, {})

    rejected = events[4]
    d = "DiskAttachmentStore"
    assert summary(events) == [
        (BYTES_UPLOAD, "ok", who, d, "call", None, upload.id, None),
        (BYTES_READ, "ok", who, d, "call", None, upload.id, None),
        (BYTES_READ, "ok", who, d, "call", None, upload.id, None),
        (BYTES_READ, "not_found", who, d, "call", None, "atc_missing", "NotFoundError"),
        (BYTES_UPLOAD, "rejected", who, d, "call", None, rejected.attachment_id, "UploadRejected"),
        (BYTES_UPLOAD, "rejected", who, d, "call", None, None, "UploadRejected"),
        (BYTES_DELETE, "ok", who, d, "call", None, upload.id, None),
        (BYTES_DELETE, "denied", None, d, "call", None, upload.id, "TenantError"),
    ]
    assert rejected.attachment_id is not None and rejected.attachment_id.startswith("atc_")
    assert_no_content(events, caplog)


@needs_instrumented_store
async def test_signed_url_uploads_and_downloads(
    store: Any,
    disk: DiskAttachmentStore[Any],
    events: list[AuditEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    who = tenant()
    ctx = {"tenant_id": who}
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        created = await disk.create_attachment(_params(f"{CANARY}.txt"), ctx)
        await store.save_attachment(created, ctx)
        assert created.upload_descriptor is not None
        url = str(created.upload_descriptor.url)
        sent = await client.post(url, files={"file": (CANARY, CANARY.encode(), "text/plain")})
        assert sent.status_code == 200, sent.text
        again = await client.post(url, files={"file": ("a", b"b", "text/plain")})
        assert again.status_code == 409
        download = disk.download_url(created.id, ctx)
        got = await client.get(download)
        assert got.status_code == 200 and got.content == CANARY.encode()
        assert (await client.get(download.replace("&s=", "&s=x"))).status_code == 403
        forged = await client.get(f"http://test/files/files/{created.id}")
        assert forged.status_code == 403
        await store.delete_attachment(created.id, ctx)
        gone = await client.get(download)
        assert gone.status_code == 404

    d, s = "DiskAttachmentStore", type(store).__name__
    i = created.id
    assert summary(events) == [
        (BYTES_UPLOAD, "ok", who, d, "signed_url", None, i, None),
        (BYTES_UPLOAD, "rejected", who, d, "signed_url", None, i, "UploadRejected"),
        (BYTES_READ, "ok", who, d, "signed_url", None, i, None),
        (BYTES_READ, "denied", None, d, "signed_url", None, i, "SignatureError"),
        (BYTES_READ, "denied", None, d, "signed_url", None, i, "SignatureError"),
        # the store deletes the bytes after the metadata (a delete wins over an upload)
        (BYTES_DELETE, "ok", who, d, ATTACHMENT_DELETE, None, i, None),
        (ATTACHMENT_DELETE, "ok", who, s, "call", None, i, None),
        (BYTES_READ, "not_found", who, d, "signed_url", None, i, "NotFoundError"),
    ]
    assert_no_content(events, caplog)


async def test_a_failing_hook_blocks_a_signed_download(
    store: Any, disk: DiskAttachmentStore[Any]
) -> None:
    ctx = {"tenant_id": tenant()}
    upload = await disk.upload(b"secret bytes", name="a.txt", mime_type="text/plain", context=ctx)

    def refuse(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    disk.audit = refuse
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get(disk.download_url(upload.id, ctx))
    assert answer.status_code == 500 and b"secret bytes" not in answer.content
    with pytest.raises(AuditError):
        await disk.read(upload.id, ctx)


async def test_orphans_are_reported_as_such(
    store: Any, tmp_path: Path, events: list[AuditEvent]
) -> None:
    """``delete_orphans`` sweeps every tenant: SQL stores get tables of their own here."""
    if isinstance(store, SQLStore):
        url = store.engine.url.render_as_string(hide_password=False)
        store = SQLStore.from_url(url, table_prefix=f"aud{uuid.uuid4().hex[:8]}_")
        await store.create_schema()
    store.audit = events.append
    disk = DiskAttachmentStore(
        store,
        tmp_path / "orphans",
        base_url="http://test/files",
        secret=SECRET,
        allowed_mime_types={"text/plain"},
    )
    who = tenant()
    ctx = {"tenant_id": who}
    try:
        upload = await disk.upload(b"orphan", name="o.txt", mime_type="text/plain", context=ctx)
        events.clear()
        assert await disk.delete_orphans(older_than=timedelta(seconds=-60)) == 1
    finally:
        if isinstance(store, SQLStore):
            async with store.engine.begin() as conn:
                await conn.run_sync(store.tables.metadata.drop_all)
                await conn.exec_driver_sql(f"DROP TABLE {store.table_prefix}stores_alembic_version")
            await store.close()
    name = type(store).__name__
    assert summary(events) == [  # bytes only once the metadata is really gone
        (ATTACHMENT_DELETE, "ok", who, name, "orphans", None, upload.id, None),
        (BYTES_DELETE, "ok", who, "DiskAttachmentStore", "orphans", None, upload.id, None),
    ]


async def test_a_hook_given_to_the_constructor_and_sync_or_async() -> None:
    seen: list[str] = []

    async def async_hook(event: AuditEvent) -> None:
        seen.append(f"async {event.action}")

    store: MemoryStore[Any] = MemoryStore(audit=async_hook)
    await store.delete_thread("thr_1", {"tenant_id": "t"})
    store.audit = lambda event: seen.append(f"sync {event.action}")
    await store.delete_thread("thr_1", {"tenant_id": "t"})
    assert seen == [f"async {THREAD_DELETE}", f"sync {THREAD_DELETE}"]


def _params(name: str) -> Any:
    from chatkit.types import AttachmentCreateParams

    return AttachmentCreateParams(name=name, size=len(CANARY.encode()), mime_type="text/plain")


def test_events_are_frozen_and_ids_are_clipped() -> None:
    event = AuditEvent(THREAD_DELETE, "ok", "t", "MemoryStore", thread_id="x")
    with pytest.raises(AttributeError):
        event.outcome = "error"  # type: ignore[misc]
    assert event.at.tzinfo is timezone.utc
    assert datetime.now(timezone.utc) - event.at < timedelta(minutes=1)


async def test_a_conditional_delete_that_deleted_nothing_is_not_reported(
    store: Any, disk: DiskAttachmentStore[Any], events: list[AuditEvent]
) -> None:
    """An attachment sent in a message is no orphan: delete_orphan keeps it and says nothing."""
    ctx = {"tenant_id": tenant()}
    sent = await disk.upload(b"x", name="a.txt", mime_type="text/plain", context=ctx, thread_id="t")
    events.clear()
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert not await store.delete_orphan(sent.id, ctx, later)
    assert events == []
    assert (await store.load_attachment(sent.id, ctx)).thread_id == "t"
