"""What is particular to the SQL stores: URLs, engines, schema, keys, limits, stored JSON."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from sqlalchemy import exc, select
from sqlalchemy.ext.asyncio import create_async_engine

from chatkit_stores import MySQLStore, PostgresStore, SchemaMissingError, SQLiteStore, SQLStore
from chatkit_stores.sql.dialects import async_url
from chatkit_stores.testing import models
from conftest import TEST_PREFIX, drop_tables

CTX = {"user_id": "u"}


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest_asyncio.fixture
async def store(url: str) -> AsyncIterator[SQLStore[Any]]:
    async with SQLStore.from_url(url, table_prefix=TEST_PREFIX) as store:
        await store.create_schema()
        yield store


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
        ("mysql://root@h/db", "mysql+aiomysql"),
        ("mariadb://root@h/db", "mariadb+aiomysql"),
        ("sqlite:///chat.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///chat.db", "sqlite+aiosqlite"),
    ],
)
def test_urls_map_to_async_drivers(given: str, driver: str) -> None:
    assert async_url(given).drivername == driver


def test_unsupported_url() -> None:
    with pytest.raises(ValueError, match="sqlite://, postgresql:// or mysql://"):
        SQLStore.from_url("oracle://scott@h/db")


def test_from_url_picks_the_backend(tmp_path: Path) -> None:
    assert type(SQLStore.from_url(f"sqlite:///{tmp_path}/x.db")) is SQLiteStore
    assert type(SQLStore.from_url("postgresql://u@127.0.0.1:1/db")) is PostgresStore
    assert type(SQLStore.from_url("mysql://u@127.0.0.1:1/db")) is MySQLStore


def test_store_refuses_another_backend() -> None:
    with pytest.raises(ValueError, match="PostgresStore needs a postgresql URL"):
        PostgresStore("mysql://root@127.0.0.1/db")


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [("asyncpg", "postgresql://u@h/db", "postgres"), ("aiomysql", "mysql://u@h/db", "mysql")],
)
def test_missing_driver_names_the_extra(
    module: str, url: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ImportError, match=re.escape(f"pip install 'chatkit-stores[{extra}]'")):
        SQLStore.from_url(url)


def test_bad_table_prefix() -> None:
    with pytest.raises(ValueError, match="table_prefix"):
        SQLiteStore(":memory:", table_prefix="x; DROP TABLE y")


@pytest.mark.asyncio
async def test_constructor_does_no_io() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/nowhere")  # nothing listens on port 1
    with pytest.raises(exc.OperationalError) as raised:  # the same family as a failed query
        await store.load_thread("thr_x", CTX)
    assert isinstance(raised.value.orig, OSError)
    await store.close()


@pytest.mark.asyncio
async def test_sqlite_paths_and_memory(tmp_path: Path) -> None:
    for target in (str(tmp_path / "a.db"), tmp_path / "b.db", ":memory:"):
        async with SQLiteStore(target) as store:  # creates its tables on first use
            thread = models.thread()
            await store.save_thread(thread, CTX)
            assert await store.load_thread(thread.id, CTX) == thread
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()


@pytest.mark.asyncio
async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "w.db") as store:
        await store.create_schema()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_missing_schema_says_how_to_fix(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    async with SQLStore.from_url(url, table_prefix=f"absent{uuid.uuid4().hex[:8]}_") as store:
        with pytest.raises(SchemaMissingError, match="chatkit-stores migrate"):
            await store.load_thread("thr_x", CTX)


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_tables_of_an_older_revision_say_how_to_fix(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A library upgrade without ``migrate``: the tables lack threads.version (0002)."""
    from chatkit_stores.migrations import downgrade, migrate

    url = request.getfixturevalue(f"{backend}_url")
    prefix = f"old{uuid.uuid4().hex[:8]}_"
    await migrate(url, "0001", prefix=prefix)
    try:
        async with SQLStore.from_url(url, table_prefix=prefix) as store:
            with pytest.raises(SchemaMissingError, match=r"older than .*chatkit-stores migrate"):
                await store.load_thread("thr_x", CTX)
            with pytest.raises(SchemaMissingError, match="chatkit-stores migrate"):
                await store.save_thread(models.thread(), CTX)
    finally:
        await downgrade(url, "base", prefix=prefix)


@pytest.mark.asyncio
async def test_create_schema_is_idempotent(store: SQLStore[Any]) -> None:
    await store.create_schema()
    await store.create_schema()


@pytest.mark.asyncio
async def test_injected_engine_stays_open(url: str) -> None:
    engine = create_async_engine(async_url(url))
    async with SQLStore.from_url(url, table_prefix=TEST_PREFIX) as owner:
        await owner.create_schema()
    store = SQLStore(engine=engine, table_prefix=TEST_PREFIX)
    thread = models.thread()
    await store.save_thread(thread, CTX)
    await store.delete_thread(models.new_id("thr"), CTX)
    assert await store.load_thread(thread.id, CTX) == thread, "committed on the caller's engine"
    await store.close()
    async with engine.connect() as conn:  # still usable: the caller owns it
        await conn.exec_driver_sql("SELECT 1")
    await engine.dispose()


@pytest.mark.asyncio
async def test_stored_json_is_not_double_encoded(store: SQLStore[Any]) -> None:
    thread = models.thread(title="\x00 and 😀")
    await store.save_thread(thread, CTX)
    t = store.tables.threads
    async with store.engine.connect() as conn:
        data = (await conn.execute(select(t.c.data).where(t.c.id == thread.id))).scalar_one()
    assert isinstance(data, str) and json.loads(data)["title"] == "\x00 and 😀", (
        "the data column holds the pydantic JSON object itself, not a JSON string of it"
    )


@pytest.mark.asyncio
async def test_oversized_and_nul_ids(store: SQLStore[Any]) -> None:
    for bad in ("x" * 256, "a\x00b", ""):
        thread = models.thread()
        thread.id = bad
        with pytest.raises(ValueError, match="1 to 255 characters"):
            await store.save_thread(thread, CTX)
        with pytest.raises(NotFoundError):
            await store.load_thread(bad, CTX)
        with pytest.raises(NotFoundError):
            await store.load_thread_items(models.new_id("thr"), bad, 10, "asc", CTX)
        await store.delete_thread(bad, CTX)  # a no-op, like any missing thread
    longest = "é" * 255  # 510 bytes of UTF-8: the limit counts characters
    await store.save_thread(models.thread(longest), CTX)
    assert (await store.load_thread(longest, CTX)).id == longest


@pytest.mark.asyncio
async def test_max_page_size_clamps_with_exact_has_more(url: str) -> None:
    async with SQLStore.from_url(url, table_prefix=TEST_PREFIX, max_page_size=2) as store:
        await store.create_schema()
        thread = models.thread()
        for _ in range(3):
            await store.add_thread_item(thread.id, models.end_of_turn(thread.id, models.T0), CTX)
        page = await store.load_thread_items(thread.id, None, 10**9, "asc", CTX)
        assert len(page.data) == 2 and page.has_more and page.after == page.data[-1].id
        rest = await store.load_thread_items(thread.id, page.after, 10**9, "asc", CTX)
        assert len(rest.data) == 1 and not rest.has_more


FAIL_ON_DELETE = {
    "postgresql": [
        "CREATE OR REPLACE FUNCTION {p}boom() RETURNS trigger AS $$"
        " BEGIN RAISE EXCEPTION 'boom'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER {p}boom BEFORE DELETE ON {p}threads"
        " FOR EACH ROW EXECUTE FUNCTION {p}boom()",
    ],
    "mysql": [
        "CREATE TRIGGER {p}boom BEFORE DELETE ON {p}threads FOR EACH ROW"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'"
    ],
    "sqlite": [
        "CREATE TRIGGER {p}boom BEFORE DELETE ON {p}threads BEGIN SELECT RAISE(ABORT, 'boom'); END"
    ],
}


@pytest.mark.asyncio
async def test_delete_thread_is_all_or_nothing(url: str) -> None:
    prefix = f"atomic{uuid.uuid4().hex[:8]}_"
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        await store.create_schema()
        try:
            thread = models.thread()
            await store.save_thread(thread, CTX)
            item = models.end_of_turn(thread.id)
            await store.add_thread_item(thread.id, item, CTX)
            await store.save_attachment(models.file_attachment(thread_id=thread.id), CTX)
            async with store.engine.begin() as conn:  # the last DELETE of delete_thread fails
                for sql in FAIL_ON_DELETE[store.backend]:
                    await conn.exec_driver_sql(sql.format(p=prefix))
            with pytest.raises(Exception, match="boom"):
                await store.delete_thread(thread.id, CTX)
            assert await store.load_item(thread.id, item.id, CTX) == item, (
                "a failed delete_thread must leave the items it had already deleted in place"
            )
            page = await store.load_thread_items(thread.id, None, 10, "asc", CTX)
            assert [i.id for i in page.data] == [item.id]
        finally:
            await drop_tables(store.engine, prefix)
            if store.backend == "postgresql":
                async with store.engine.begin() as conn:
                    await conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {prefix}boom()")


@pytest.mark.asyncio
async def test_page_parsing_lets_other_tasks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a page of big items yields to the event loop between time slices."""
    from chatkit_stores.sql import store as sql_store

    monkeypatch.setattr(sql_store, "PARSE_SLICE_S", 0.0)  # every item uses up its slice
    ticks = 0
    seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def parse(data: str) -> str:
        seen.append(ticks)
        return data

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    parsed = await sql_store._parse_yielding([(str(n),) for n in range(5)], parse)
    task.cancel()
    assert parsed == ["0", "1", "2", "3", "4"]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen
