"""Per-statement OpenTelemetry spans: asyncpg's instrumentation sees the store's statements.

The SQL stores run statements on the driver connection (sql/driver.py), not through a SQLAlchemy
``Connection``, so SQLAlchemy's instrumentation records none of them. asyncpg's
(``opentelemetry-instrumentation-asyncpg``) wraps the driver's methods and does: one CLIENT
span per statement, nested under the store call's span, in that call's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from chatkit.types import ThreadMetadata
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from chatkit_stores import PostgresStore, Telemetry
from conftest import TEST_PREFIX

pytestmark = pytest.mark.postgres

ASYNCPG_SCOPE = "opentelemetry.instrumentation.asyncpg"


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A local tracer provider; asyncpg instrumented with it for the test only."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = AsyncPGInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, spans
    finally:
        instrumentor.uninstrument()


def children(parent: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_asyncpg_statement_spans_nest_under_the_store_spans(
    postgres_url: str, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    telemetry = Telemetry(tracer_provider=provider)
    context = {"tenant_id": f"otel-{uuid.uuid4().hex}"}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime(2025, 1, 1))
    async with PostgresStore(postgres_url, table_prefix=TEST_PREFIX, telemetry=telemetry) as store:
        await store.save_thread(thread, context)  # the first call also makes its connection
        exporter.clear()
        await store.save_thread(thread.model_copy(update={"title": "renamed"}), context)
        await store.load_thread(thread.id, context)
        await store.delete_thread(thread.id, context)  # a transaction of several statements

    spans = list(exporter.get_finished_spans())
    statements = [s for s in spans if s.instrumentation_scope.name == ASYNCPG_SCOPE]
    calls = [s for s in spans if s.instrumentation_scope.name != ASYNCPG_SCOPE]
    assert len(calls) == 3, [s.name for s in spans]
    for call in calls:
        nested = children(call, statements)
        assert nested, f"no statement span under {call.name}"
        assert all(s.kind is SpanKind.CLIENT for s in nested)
        assert all(s.context.trace_id == call.context.trace_id for s in nested)  # type: ignore[union-attr]
    assert all(s.parent is not None for s in statements), "a statement span outside a call"
    deleted = children(calls[2], statements)
    assert len(deleted) >= 3, [s.name for s in deleted]  # BEGIN, the DELETEs, COMMIT
    texts = " ".join(str(s.attributes) for s in statements)
    assert "DELETE" in texts and "SELECT" in texts


def test_sqlalchemy_sees_no_store_statement(postgres_url: str) -> None:
    # What the page says: the store's statements never pass through a SQLAlchemy Connection,
    # so engine events (which SQLAlchemy's instrumentation listens to) see none of them.
    import asyncio

    from sqlalchemy import event

    seen: list[Any] = []

    async def run() -> None:
        context = {"tenant_id": f"otel-{uuid.uuid4().hex}"}
        async with PostgresStore(postgres_url, table_prefix=TEST_PREFIX) as store:
            await store.load_threads(10, None, "asc", context)  # schema check, connection
            event.listen(store.engine.sync_engine, "before_cursor_execute", seen.append)
            await store.load_threads(10, None, "asc", context)

    asyncio.run(run())
    assert seen == []
