"""Fixtures of the fault tests: a server database behind a fault proxy, fresh tables per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from chatkit_stores import SQLStore

from .proxy import FaultProxy

DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
TABLES = ("items", "attachments", "threads", "stores_alembic_version")


@dataclass(frozen=True)
class Database:
    """A server database: its direct URL, and the URL of the same database through a port."""

    backend: str
    url: str

    @property
    def address(self) -> tuple[str, int]:
        parsed = make_url(self.url)
        return parsed.host or "127.0.0.1", parsed.port or DEFAULT_PORTS[self.backend]

    def through(self, port: int) -> str:
        parsed = make_url(self.url).set(host="127.0.0.1", port=port)
        return parsed.render_as_string(hide_password=False)


SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


def server_database(request: pytest.FixtureRequest) -> Database:
    """The database of the ``SERVERS`` parameter (URLs from the environment or testcontainers)."""
    return Database(request.param, str(request.getfixturevalue(f"{request.param}_url")))


@pytest.fixture(params=SERVERS)
def database(request: pytest.FixtureRequest) -> Database:
    """PostgreSQL, then MariaDB/MySQL."""
    return server_database(request)


@pytest_asyncio.fixture
async def proxy(database: Database) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the database server."""
    fault_proxy = FaultProxy(*database.address)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()


@pytest_asyncio.fixture
async def prefix(database: Database) -> AsyncIterator[str]:
    """A table prefix of this test only, its tables created on the direct URL, then dropped."""
    async with fresh_tables(database.url) as table_prefix:
        yield table_prefix


@contextlib.asynccontextmanager
async def fresh_tables(url: str) -> AsyncIterator[str]:
    """Create the tables of a new prefix (on the direct URL); drop them afterwards."""
    table_prefix = f"ckf{uuid.uuid4().hex[:10]}_"
    store: SQLStore[Any] = SQLStore.from_url(url, table_prefix=table_prefix)
    try:
        await store.create_schema()
    finally:
        await store.close()
    try:
        yield table_prefix
    finally:
        await drop_tables(url, table_prefix)


async def drop_tables(url: str, table_prefix: str) -> None:
    """Drop the tables (and version table) of ``table_prefix``."""
    store: SQLStore[Any] = SQLStore.from_url(url, table_prefix=table_prefix)
    try:
        async with store.engine.begin() as conn:
            for table in TABLES:
                await conn.execute(text(f"DROP TABLE IF EXISTS {table_prefix}{table}"))
    finally:
        await store.close()
