"""The conformance suite against every store this package ships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLiteStore
from chatkit_stores.testing import StoreTests
from conftest import TEST_PREFIX


class TestMemoryStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[MemoryStore[Any]]:
        yield MemoryStore()


class TestSQLiteStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore[Any]]:
        async with SQLiteStore(tmp_path / "chat.db") as store:
            yield store


class TestPostgresStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[PostgresStore[Any]]:
        async with PostgresStore(postgres_url, table_prefix=TEST_PREFIX) as store:
            yield store


class TestMySQLStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, mysql_url: str) -> AsyncIterator[MySQLStore[Any]]:
        async with MySQLStore(mysql_url, table_prefix=TEST_PREFIX) as store:
            yield store
