"""Calls cancelled while they wait for a lock another connection holds.

PostgreSQL and MariaDB: another connection holds the thread's row lock; each save times out
(``asyncio.wait_for``) while its statement waits on the server. When the lock is released, no
abandoned statement may still run: the last save the application made is the one that stays,
and the server holds no connections beyond the pool. SQLite: another process holds the write
lock while ``BEGIN IMMEDIATE`` waits in SQLite's busy handler; after the timeout the store must
not take the lock later by itself, and its next call works at once.
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
from chatkit_stores.sql.dialects import async_url
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
