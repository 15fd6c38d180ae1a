"""PostgreSQL behind a transaction-mode pooler: a store from a plain URL works (sql/poolers.py).

The load tests need ``CHATKIT_STORES_PGBOUNCER_URL``: PgBouncer in transaction mode in front of
the PostgreSQL database of the other tests (CI starts one, ``.ci/pgbouncer``); the retry tests
run on PostgreSQL directly.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from chatkit.types import ThreadMetadata, UserMessageItem, UserMessageTextContent
from sqlalchemy import exc

from chatkit_stores import PostgresStore
from chatkit_stores.sql import poolers
from chatkit_stores.sql.driver import Driver
from conftest import TEST_PREFIX

pytestmark = pytest.mark.postgres

PGBOUNCER_ENV = "CHATKIT_STORES_PGBOUNCER_URL"
T0 = ThreadMetadata(id="thr_x", created_at="2025-01-01T00:00:00", title=None).created_at


@pytest.fixture
def pgbouncer_url(postgres_url: str) -> str:
    """PgBouncer (transaction mode) in front of ``postgres_url``'s database, with its tables."""
    url = os.environ.get(PGBOUNCER_ENV)
    if not url:
        why = f"PgBouncer tests cannot run: set {PGBOUNCER_ENV} (transaction mode, .ci/pgbouncer)"
        if os.environ.get("CHATKIT_STORES_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"{why} (CHATKIT_STORES_REQUIRE_BACKENDS=1)", pytrace=False)
        pytest.skip(why)
    return url


def message(thread_id: str, n: int) -> UserMessageItem:
    return UserMessageItem(
        id=f"msg_{uuid.uuid4().hex}",
        thread_id=thread_id,
        created_at=T0,
        content=[UserMessageTextContent(text=f"message {n}")],
        attachments=[],
        inference_options={},
    )


async def test_a_plain_url_behind_pgbouncer_gives_no_errors_and_loses_nothing(
    pgbouncer_url: str,
) -> None:
    # 40 tasks on a pool of 5 server connections (as in issue 17: 597 errors in 6,000 calls
    # before): every call succeeds and every acknowledged add is found.
    store: PostgresStore[Any] = PostgresStore(pgbouncer_url, table_prefix=TEST_PREFIX)
    acknowledged: list[tuple[dict[str, str], str, str]] = []
    errors: list[BaseException] = []

    async def worker(n: int) -> None:
        context = {"tenant_id": f"pgb-{n}-{uuid.uuid4().hex[:6]}"}
        for turn in range(6):
            thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=T0)
            try:
                await store.save_thread(thread, context)
                added = []
                for k in range(2):
                    item = message(thread.id, k)
                    await store.add_thread_item(thread.id, item, context)
                    added.append((context, thread.id, item.id))
                assert (await store.load_thread(thread.id, context)).id == thread.id
                page = await store.load_thread_items(thread.id, None, 20, "desc", context)
                assert len(page.data) == 2
                if turn % 3 == 0:
                    await store.delete_thread(thread.id, context)
                else:
                    acknowledged.extend(added)
            except Exception as error:
                errors.append(error)

    try:
        await asyncio.gather(*(worker(n) for n in range(40)))
        assert errors == []
        assert poolers.behind(store.engine.sync_engine) is True
        for context, thread_id, item_id in acknowledged:
            assert (await store.load_item(thread_id, item_id, context)).id == item_id
        assert len(acknowledged) == 40 * 4 * 2
    finally:
        await store.close()


async def test_no_pooler_is_seen_on_a_direct_connection(postgres_url: str) -> None:
    async with PostgresStore(postgres_url, table_prefix=TEST_PREFIX) as store:
        with pytest.raises(NotFoundError):
            await store.load_thread("thr_missing", {"tenant_id": "t"})
        assert poolers.behind(store.engine.sync_engine) is False


@pytest_asyncio.fixture
async def one_connection(postgres_url: str) -> AsyncIterator[PostgresStore[Any]]:
    """A store on one pooled connection with named, cached statements (``pooler=False``)."""
    options = {"pool_size": 1, "max_overflow": 0, "pooler": False}
    async with PostgresStore(
        postgres_url, table_prefix=TEST_PREFIX, engine_options=options
    ) as store:
        yield store


async def forget_prepared_statements(store: PostgresStore[Any]) -> None:
    """Make the server forget the statements asyncpg cached (what a pooler's switch does)."""
    async with store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute("DEALLOCATE ALL")  # type: ignore[union-attr]


async def test_a_lost_statement_is_retried_on_unnamed_statements(
    one_connection: PostgresStore[Any],
) -> None:
    store, context = one_connection, {"tenant_id": f"lost-{uuid.uuid4().hex}"}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=T0)
    await store.save_thread(thread, context)
    await store.add_thread_item(thread.id, message(thread.id, 0), context)
    assert (await store.load_thread(thread.id, context)).id == thread.id
    await forget_prepared_statements(store)

    # One statement outside a transaction, then an atomic call: both retried, both done.
    assert (await store.load_thread(thread.id, context)).id == thread.id
    assert poolers.behind(store.engine.sync_engine) is True
    await store.delete_thread(thread.id, context)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, context)
    async with store.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection._stmt_cache_enabled is False  # type: ignore[union-attr]


def lost_statement_error() -> exc.DBAPIError:
    lost = asyncpg.exceptions.InvalidSQLStatementNameError("prepared statement does not exist")
    return exc.DBAPIError.instance(None, None, lost, Exception)


async def test_a_call_with_an_answered_statement_is_not_retried_outside_a_transaction(
    one_connection: PostgresStore[Any],
) -> None:
    engine = one_connection.engine.sync_engine

    async def two_statements(driver: Driver) -> None:
        driver.answers = 1  # a first statement was answered (it may have written)

    for atomic, retried in ((False, False), (True, True)):
        attempt = poolers.Attempt(two_statements)
        await attempt.work(Driver(None))
        assert attempt.may_retry(engine, lost_statement_error(), atomic) is retried
    other = exc.DBAPIError.instance(
        None, None, asyncpg.exceptions.UniqueViolationError(), Exception
    )
    assert poolers.Attempt(two_statements).may_retry(engine, other, True) is False


def test_the_pooler_option_is_checked() -> None:
    with pytest.raises(ValueError, match="pooler must be"):
        PostgresStore("postgresql://u@h/db", engine_options={"pooler": "yes"})
    with pytest.raises(ValueError, match="PostgreSQL only"):
        from chatkit_stores import SQLiteStore

        SQLiteStore(":memory:", engine_options={"pooler": True})
