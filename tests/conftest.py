"""The project's test databases: the plugin's URL fixtures, with our test tables created once.

See ``chatkit_stores.pytest_plugin`` for where URLs come from (environment variables, else
testcontainers, else skip; ``CHATKIT_STORES_REQUIRE_BACKENDS=1`` turns skips into failures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chatkit_stores import SQLStore
from chatkit_stores.pytest_plugin import server_url

TEST_PREFIX = "ckt_"


def _prepare(url: str) -> str:
    """Create the test tables once per session (create_schema is idempotent)."""

    async def create() -> None:
        store = SQLStore.from_url(url, table_prefix=TEST_PREFIX)
        try:
            await store.create_schema()
        finally:
            await store.close()

    # In a thread: the fixture may be first requested from inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database with the test tables."""
    for url in server_url("postgres"):
        yield _prepare(url)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a MySQL/MariaDB database with the test tables."""
    for url in server_url("mysql"):
        yield _prepare(url)


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where attachment tests keep metadata: ``memory``, or a URL of each SQL backend."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))
