"""The conformance suite against every store this package ships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import Store

from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLiteStore, SQLStore
from chatkit_stores.testing import Capabilities, StoreTests
from conftest import TEST_PREFIX


class TestMemoryStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[MemoryStore[Any]]:
        yield MemoryStore()

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        return Capabilities(durability=False)  # nothing outlives the process


class SQLStoreTests(StoreTests):
    """Shared by the SQL backends: a new store on the same database for the durability tests."""

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
