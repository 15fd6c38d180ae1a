"""The conformance suite against every store this package ships."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import Store

from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLiteStore, SQLStore
from chatkit_stores.sql.driver import DRIVERS
from chatkit_stores.testing import Capabilities, StoreTests, await_points_of
from chatkit_stores.testing.races import STORE_METHODS, AwaitPoints
from conftest import TEST_PREFIX


class TestMemoryStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[MemoryStore[Any]]:
        yield MemoryStore()

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        return Capabilities(durability=False)  # nothing outlives the process


class SQLStoreTests(StoreTests):
    """Shared by the SQL backends: a new store on the same database for the durability tests;
    each statement is an await point of the race tests too."""

    @pytest.fixture
    def await_points(self, store: Store[Any]) -> AwaitPoints:
        statements = ("begin", "execute", "fetch", "commit")
        drivers = [(driver, statements) for driver in set(DRIVERS.values())]
        return await_points_of((store, STORE_METHODS), *drivers)

    @pytest_asyncio.fixture
    async def reopen(self) -> AsyncIterator[Any]:
        opened: list[SQLStore[Any]] = []

        async def reopen(store: Store[Any]) -> Store[Any]:
            assert isinstance(store, SQLStore)
            await store.close()
            url = store.engine.url.render_as_string(hide_password=False)
            opened.append(type(store)(url, table_prefix=store.table_prefix))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()


class TestSQLiteStore(SQLStoreTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore[Any]]:
        async with SQLiteStore(tmp_path / "chat.db") as store:
            yield store


class TestSQLiteInMemoryStore(SQLStoreTests):
    """One connection shared by every call."""

    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[SQLiteStore[Any]]:
        async with SQLiteStore(":memory:") as store:
            yield store

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        return Capabilities(durability=False)


class TestSQLiteSharedMemoryStore(TestSQLiteInMemoryStore):
    """A shared-cache in-memory database (a URI filename)."""

    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[SQLiteStore[Any]]:
        name = f"file:{uuid.uuid4().hex}?mode=memory&cache=shared"
        async with SQLiteStore(name) as store:
            yield store


class TestPostgresStore(SQLStoreTests):
    @pytest_asyncio.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[PostgresStore[Any]]:
        async with PostgresStore(postgres_url, table_prefix=TEST_PREFIX) as store:
            yield store


class TestMySQLStore(SQLStoreTests):
    @pytest_asyncio.fixture
    async def store(self, mysql_url: str) -> AsyncIterator[MySQLStore[Any]]:
        async with MySQLStore(mysql_url, table_prefix=TEST_PREFIX) as store:
            yield store
