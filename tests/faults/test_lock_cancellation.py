"""Calls cancelled while they wait for a lock another connection holds.

PostgreSQL and MariaDB: another connection holds the thread's row lock; each save times out
(``asyncio.wait_for``) while its statement waits on the server. When the lock is released, no
abandoned statement may still run: the last save the application made is the one that stays,
and the server holds no connections beyond the pool. SQLite: another process holds the write
lock; a call that gives up must not take the lock later by itself (nor write after a change
made since), its next call works at once, and a call that keeps waiting gets the lock when it
is free, within the connection's busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chatkit_stores import SQLiteStore, SQLStore
from chatkit_stores.sql import driver
from chatkit_stores.sql.dialects import SQLITE_BUSY_TIMEOUT_S, async_url
from chatkit_stores.testing import models

from .conftest import Database

CONTEXT = {"user_id": "alice"}
ABANDONED = 5
TIMEOUT = 0.3
POOL = {"pool_size": 2, "max_overflow": 0}
WATCH_STEPS, WATCH_STEP_S = 4, 0.05


async def server_sessions(url: str, database: Database, running: str = "") -> int:
    """Sessions on the test database (the counting one excluded); with ``running``, only those
    running a statement that starts with it."""
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    if database.backend == "postgres":
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND (:running = '' OR "
            "(state = 'active' AND query LIKE :running || '%'))"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.processlist WHERE db = database() "
            "AND id <> connection_id() AND (:running = '' OR "
            "(command = 'Query' AND info LIKE CONCAT(:running, '%')))"
        )
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(query), {"running": running})).scalar_one())
    finally:
        await engine.dispose()


async def test_abandoned_saves_never_land_after_a_later_one(
    database: Database, prefix: str
) -> None:
    store: SQLStore[Any] = SQLStore.from_url(database.url, table_prefix=prefix, engine_options=POOL)
    locker = create_async_engine(async_url(database.url))
    try:
        thread = models.thread(title="first")
        await store.save_thread(thread, CONTEXT)
        before = await server_sessions(database.url, database)
        async with locker.connect() as conn:
            lock = f"SELECT data FROM {prefix}threads WHERE id = :id FOR UPDATE"
            await conn.execute(text(lock), {"id": thread.id})
            for attempt in range(ABANDONED):
                abandoned = thread.model_copy(update={"title": f"abandoned {attempt}"})
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(store.save_thread(abandoned, CONTEXT), TIMEOUT)
            running = await server_sessions(database.url, database, f"INSERT INTO {prefix}")
            assert running == 0, f"{running} abandoned saves still run on the server"
            left = await server_sessions(database.url, database)
            assert left <= before + 1 + POOL["pool_size"], (
                f"{left} connections on the server after the cancelled calls "
                f"(before: {before}; the lock holder and a pool of {POOL['pool_size']})"
            )
            await conn.commit()  # releases the row lock
        assert (await store.load_thread(thread.id, CONTEXT)).title == "first"
        await store.save_thread(thread.model_copy(update={"title": "last"}), CONTEXT)
        assert (await store.load_thread(thread.id, CONTEXT)).title == "last"
    finally:
        await locker.dispose()
        await store.close()


@pytest.mark.parametrize("timeout", [0.0, 0.001, 0.01, 0.1, TIMEOUT])
async def test_a_cancelled_sqlite_call_never_takes_the_lock_later(
    tmp_path: Path, timeout: float
) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteStore(path) as store:
        thread = models.thread()
        await store.save_thread(thread, CONTEXT)
        other = sqlite3.connect(path, isolation_level=None, timeout=2)  # another process, as
        other.execute("BEGIN IMMEDIATE")  # far as SQLite is concerned: it holds the write lock
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.delete_thread(thread.id, CONTEXT), timeout)
        other.execute("COMMIT")
        # Watch the lock for a while (an observation window, not a synchronisation): an
        # abandoned BEGIN IMMEDIATE would take it within SQLite's busy polling and keep it.
        for _ in range(WATCH_STEPS):
            await asyncio.sleep(WATCH_STEP_S)
            other.execute("BEGIN IMMEDIATE")
            other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(store.load_thread(thread.id, CONTEXT), 5)
        await asyncio.wait_for(store.delete_thread(thread.id, CONTEXT), 5)


@pytest.mark.parametrize("timeout", [0.001, 0.01, 0.1, TIMEOUT])
async def test_a_cancelled_sqlite_write_never_lands_after_a_later_delete(
    tmp_path: Path, timeout: float
) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteStore(path) as store:
        thread = models.thread()
        await store.save_thread(thread, CONTEXT)
        other = sqlite3.connect(path, isolation_level=None, timeout=2)
        other.execute("BEGIN IMMEDIATE")
        abandoned = models.user_message(thread.id)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.add_thread_item(thread.id, abandoned, CONTEXT), timeout)
        # The lock holder deletes the thread: a change made after the add was given up.
        other.execute("DELETE FROM chatkit_items WHERE thread_id = ?", (thread.id,))
        other.execute("DELETE FROM chatkit_threads WHERE id = ?", (thread.id,))
        other.execute("COMMIT")
        for _ in range(WATCH_STEPS):  # an observation window, as above
            await asyncio.sleep(WATCH_STEP_S)
            (landed,) = other.execute("SELECT count(*) FROM chatkit_items").fetchone()
            assert landed == 0, "the abandoned add wrote its item after the thread was deleted"
        other.close()


async def test_a_sqlite_call_takes_the_lock_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.db"
    async with SQLiteStore(path) as store:
        thread = models.thread()
        await store.save_thread(thread, CONTEXT)
        other = sqlite3.connect(path, isolation_level=None, timeout=2)
        other.execute("BEGIN IMMEDIATE")
        refusals = 0

        def pauses() -> Any:  # the lock holder commits while the store waits to try again
            nonlocal refusals
            while True:
                refusals += 1
                if refusals == 2:
                    other.execute("COMMIT")
                yield 0.001

        monkeypatch.setattr(driver, "_pauses", pauses)
        item = models.user_message(thread.id)
        await asyncio.wait_for(store.add_thread_item(thread.id, item, CONTEXT), 5)
        assert refusals >= 2, "the store never found the lock busy"
        assert (await store.load_item(thread.id, item.id, CONTEXT)).id == item.id
        other.close()


async def test_a_sqlite_call_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    patience = {"connect_args": {"timeout": 0.05}}
    async with SQLiteStore(path, engine_options=patience) as store:
        thread = models.thread()
        await store.save_thread(thread, CONTEXT)
        other = sqlite3.connect(path, isolation_level=None, timeout=2)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="database is locked"):
            await asyncio.wait_for(store.delete_thread(thread.id, CONTEXT), 5)
        other.execute("COMMIT")
        other.close()
        await store.delete_thread(thread.id, CONTEXT)


async def test_sqlalchemy_connections_of_a_sqlite_store_keep_their_busy_timeout(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "chat.db") as store:
        await store.save_thread(models.thread(), CONTEXT)  # the driver has had the connection
        async with store.engine.connect() as conn:
            busy_ms = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert busy_ms == SQLITE_BUSY_TIMEOUT_S * 1000
        await store.save_thread(models.thread(), CONTEXT)  # and the driver's again
