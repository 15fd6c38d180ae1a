"""OpenTelemetry: one span per call, semantic attributes, no content; off costs next to nothing."""

from __future__ import annotations

import hashlib
import hmac
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentCreateParams,
    FileAttachment,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
)
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.attributes import db_attributes, error_attributes, server_attributes
from opentelemetry.semconv.metrics import db_metrics
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from chatkit_stores import DiskAttachmentStore, MemoryStore, S3AttachmentStore, Telemetry
from chatkit_stores import telemetry as telemetry_module
from chatkit_stores.pytest_plugin import s3_credentials
from chatkit_stores.telemetry import (
    ATTACHMENTS_BACKEND,
    ATTACHMENTS_DURATION,
    DURATION_BUCKETS,
    TENANT_HASH,
)
from conftest import TEST_PREFIX
from test_audit import CANARY, INSTRUMENTED_KINDS, SECRET, store_fixture  # noqa: F401

needs_instrumented_store = pytest.mark.parametrize("store", INSTRUMENTED_KINDS, indirect=True)


@dataclass
class Otel:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, metric: str) -> list[HistogramDataPoint]:
        data = self.metrics.get_metrics_data()
        assert data is not None, "nothing was measured"
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points  # type: ignore[union-attr]
        ]


def make_otel(**options: Any) -> Otel:
    """Providers on local objects: no global OpenTelemetry state is touched."""
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[metrics])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    return Otel(telemetry, spans, metrics, tracer_provider)


@pytest.fixture
def otel() -> Otel:
    return make_otel()


def sha(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


def no_content(spans: list[ReadableSpan]) -> None:
    assert spans
    for span in spans:
        texts = [span.name, *map(str, span.attributes.values())]  # type: ignore[union-attr]
        texts += [str(v) for e in span.events for v in e.attributes.values()]  # type: ignore[union-attr]
        assert not [t for t in texts if CANARY in t]


EXPECTED_SYSTEM = {
    "MemoryStore": ("memory", None),
    "SQLiteStore": ("sqlite", None),
    "PostgresStore": ("postgresql", 5432),
    "MySQLStore": ("mariadb", 3306),
}


@needs_instrumented_store
async def test_every_store_call_is_one_span_with_database_attributes(
    store: Any, otel: Otel
) -> None:
    store.telemetry = otel.telemetry
    tenant = f"tenant-{uuid.uuid4().hex}"
    ctx = {"tenant_id": tenant}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", title=CANARY, created_at=datetime.now())
    attachment = FileAttachment(id=f"atc_{uuid.uuid4().hex}", name=CANARY, mime_type="text/plain")
    item = UserMessageItem(
        id=f"msg_{uuid.uuid4().hex}",
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[{"type": "input_text", "text": CANARY}],
        inference_options=InferenceOptions(),
    )
    await store.save_thread(thread, ctx)
    await store.load_thread(thread.id, ctx)
    await store.load_threads(10, None, "asc", ctx)
    await store.add_thread_item(thread.id, item, ctx)
    await store.save_item(thread.id, item, ctx)
    await store.load_item(thread.id, item.id, ctx)
    await store.load_thread_items(thread.id, None, 10, "desc", ctx)
    await store.delete_thread_item(thread.id, item.id, ctx)
    await store.save_attachment(attachment, ctx)
    await store.load_attachment(attachment.id, ctx)
    await store.delete_attachment(attachment.id, ctx)
    await store.delete_thread(thread.id, ctx)
    await store.orphaned_attachments(datetime.now() - timedelta(days=3650), limit=1)

    prefix = "" if isinstance(store, MemoryStore) else TEST_PREFIX
    calls = [
        ("save_thread", "threads"),
        ("load_thread", "threads"),
        ("load_threads", "threads"),
        ("add_thread_item", "items"),
        ("save_item", "items"),
        ("load_item", "items"),
        ("load_thread_items", "items"),
        ("delete_thread_item", "items"),
        ("save_attachment", "attachments"),
        ("load_attachment", "attachments"),
        ("delete_attachment", "attachments"),
        ("delete_thread", "threads"),
        ("orphaned_attachments", "attachments"),
    ]
    spans = otel.finished()
    assert [s.name for s in spans] == [f"{op} {prefix}{table}" for op, table in calls]
    system, port = EXPECTED_SYSTEM[type(store).__name__]
    for span, (operation, table) in zip(spans, calls, strict=True):
        attributes = dict(span.attributes or {})
        assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.UNSET
        assert attributes[db_attributes.DB_SYSTEM_NAME] == system
        assert attributes[db_attributes.DB_OPERATION_NAME] == operation
        assert attributes[db_attributes.DB_COLLECTION_NAME] == f"{prefix}{table}"
        expected_tenant = None if operation == "orphaned_attachments" else sha(tenant)
        assert attributes.get(TENANT_HASH) == expected_tenant
        assert tenant not in str(attributes)
        if port is not None:
            assert attributes[server_attributes.SERVER_ADDRESS] == "127.0.0.1"
            assert attributes[server_attributes.SERVER_PORT] == port
            assert attributes[db_attributes.DB_NAMESPACE]
    no_content(spans)

    points = otel.points(db_metrics.DB_CLIENT_OPERATION_DURATION)
    counts = {p.attributes[db_attributes.DB_OPERATION_NAME]: p.count for p in points}  # type: ignore[index]
    assert counts == {op: 1 for op, _ in calls}, "add_thread_item's own save_item is not counted"
    for point in points:
        assert TENANT_HASH not in (point.attributes or {})
        assert list(point.explicit_bounds) == list(DURATION_BUCKETS)
        assert point.sum > 0 and point.sum < 60


@needs_instrumented_store
async def test_failures_mark_the_span_with_the_error_type_only(store: Any, otel: Otel) -> None:
    store.telemetry = otel.telemetry
    ctx = {"tenant_id": f"tenant-{uuid.uuid4().hex}"}
    with pytest.raises(NotFoundError):
        await store.load_thread(f"thr_{CANARY}", ctx)
    with pytest.raises(ValueError):
        await store.load_threads(0, None, "asc", ctx)

    missing, bad_limit = otel.finished()
    for span, error in [
        (missing, "chatkit.store.NotFoundError"),
        (bad_limit, "ValueError"),
    ]:
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})[error_attributes.ERROR_TYPE] == error
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            ("exception", {"exception.type": error})
        ]
    no_content([missing])
    errors = {
        p.attributes[db_attributes.DB_OPERATION_NAME]: p.attributes[error_attributes.ERROR_TYPE]  # type: ignore[index]
        for p in otel.points(db_metrics.DB_CLIENT_OPERATION_DURATION)
    }
    assert errors == {"load_thread": "chatkit.store.NotFoundError", "load_threads": "ValueError"}


async def test_store_spans_join_the_current_trace(otel: Otel) -> None:
    memory: MemoryStore[Any] = MemoryStore(telemetry=otel.telemetry)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /chatkit") as request:
        await memory.load_threads(10, None, "asc", {"tenant_id": "t"})
    child, parent = otel.finished()
    assert child.parent is not None and child.parent.span_id == request.get_span_context().span_id
    assert parent.name == "POST /chatkit"


@pytest.fixture(params=["disk", "s3"])
def attachments(
    request: pytest.FixtureRequest, tmp_path: Path, otel: Otel
) -> Iterator[DiskAttachmentStore[Any] | S3AttachmentStore[Any]]:
    metadata: MemoryStore[Any] = MemoryStore(telemetry=otel.telemetry)
    if request.param == "disk":
        yield DiskAttachmentStore(
            metadata, tmp_path, base_url="http://test/files", secret=SECRET, max_bytes=1024
        )
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    client = boto3.client(
        "s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"), **s3_credentials()
    )
    bucket = f"ckt-otel-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    yield S3AttachmentStore(metadata, bucket, client=client, endpoint_url=endpoint, max_bytes=1024)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])
    client.delete_bucket(Bucket=bucket)


async def test_attachment_store_calls_are_spans_with_nested_store_spans(
    attachments: Any, otel: Otel
) -> None:
    ctx = {"tenant_id": "alice"}
    params = AttachmentCreateParams(name=CANARY, size=3, mime_type="text/plain")
    await attachments.create_attachment(params, ctx)
    upload = await attachments.upload(b"abc", name=CANARY, mime_type="text/plain", context=ctx)
    assert await attachments.read(upload.id, ctx) == b"abc"
    assert [c async for c in attachments.open(upload.id, ctx)] == [b"abc"]
    with pytest.raises(NotFoundError):
        await attachments.read("atc_missing", ctx)
    await attachments.delete_attachment(upload.id, ctx)

    spans = otel.finished()
    assert [s.name for s in spans] == [
        "attachments.create_attachment",
        "save_attachment attachments",
        "attachments.upload",
        "attachments.read",
        "attachments.open",
        "attachments.read",
        "attachments.delete_attachment",
    ]
    upload_span, saved = spans[2], spans[1]
    assert saved.parent is not None and saved.parent.span_id == upload_span.context.span_id
    backend = attachments.backend
    for span in spans:
        if span.name.startswith("attachments."):
            attributes = dict(span.attributes or {})
            assert attributes[ATTACHMENTS_BACKEND] == backend
            assert attributes[TENANT_HASH] == sha("alice")
            if backend == "s3":
                assert attributes["aws.s3.bucket"] == attachments.bucket
                assert attributes[server_attributes.SERVER_ADDRESS] == "127.0.0.1"
    assert spans[5].status.status_code is StatusCode.ERROR
    no_content(spans)
    points = otel.points(ATTACHMENTS_DURATION)
    operations = sorted(p.attributes["chatkit_stores.attachments.operation"] for p in points)  # type: ignore[index]
    assert operations == sorted(
        ["create_attachment", "upload", "read", "read", "open", "delete_attachment"]
    ), "one point per operation (the failed read has its own, with error.type)"
    assert sum(p.count for p in points) == 6


async def test_tenant_hash_can_be_keyed_or_left_out() -> None:
    keyed, hidden = make_otel(tenant_salt="pepper"), make_otel(record_tenant=False)
    for otel in (keyed, hidden):
        memory: MemoryStore[Any] = MemoryStore(telemetry=otel.telemetry)
        await memory.load_threads(1, None, "asc", {"tenant_id": "bob"})
    expected = hmac.new(b"pepper", b"bob", hashlib.sha256).hexdigest()[:16]
    assert (keyed.finished()[0].attributes or {})[TENANT_HASH] == expected
    assert TENANT_HASH not in (hidden.finished()[0].attributes or {})


async def test_off_returns_the_methods_own_coroutine() -> None:
    """Off means no extra frame: the caller awaits the undecorated method's coroutine."""
    off = Telemetry(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    memory: MemoryStore[Any] = MemoryStore(telemetry=off)
    for _ in range(3):  # the first call decides, the others find it decided
        coroutine = memory.load_threads(1, None, "asc", {"tenant_id": "t"})
        assert coroutine.cr_code is MemoryStore.load_threads.__wrapped__.__code__  # type: ignore[attr-defined]
        assert (await coroutine).data == []
    assert off.active is False


async def test_telemetry_switched_on_later_is_picked_up() -> None:
    later = make_otel()
    telemetry = Telemetry()  # follows the global providers; none is set in the tests
    telemetry.refresh()
    if telemetry.active:
        pytest.skip("a global OpenTelemetry provider is configured in this process")
    memory: MemoryStore[Any] = MemoryStore(telemetry=telemetry)
    await memory.load_threads(1, None, "asc", {"tenant_id": "t"})
    telemetry.tracer_provider = later.tracer_provider  # as if configured globally now
    await memory.load_threads(1, None, "asc", {"tenant_id": "t"})
    assert not telemetry.active and later.finished() == [], "decided once, not on a clock"
    telemetry.refresh()  # what an app calls after configuring OpenTelemetry late
    await memory.load_threads(1, None, "asc", {"tenant_id": "t"})
    assert telemetry.active
    assert len(later.finished()) == 1, "the call after the refresh is traced"


async def test_only_a_meter_records_durations_without_spans() -> None:
    otel = make_otel()
    meter_only = Telemetry(
        tracer_provider=NoOpTracerProvider(), meter_provider=otel.telemetry.meter_provider
    )
    memory: MemoryStore[Any] = MemoryStore(telemetry=meter_only)
    await memory.load_threads(1, None, "asc", {"tenant_id": "t"})
    assert otel.finished() == []
    assert [p.count for p in otel.points(db_metrics.DB_CLIENT_OPERATION_DURATION)] == [1]


def test_default_follows_the_global_providers() -> None:
    assert MemoryStore().telemetry is telemetry_module.DEFAULT
    assert telemetry_module.DEFAULT.tracer_provider is None


async def test_without_opentelemetry_installed_calls_run_untraced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # import now fails
    missing = Telemetry(tracer_provider=make_otel().tracer_provider)
    memory: MemoryStore[Any] = MemoryStore(telemetry=missing)
    assert (await memory.load_threads(1, None, "asc", {"tenant_id": "t"})).data == []
    assert missing.active is False and missing.decided is True
