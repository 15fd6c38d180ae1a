"""Where the test databases are.

PostgreSQL and MySQL/MariaDB URLs come from ``CHATKIT_STORES_POSTGRES_URL`` and
``CHATKIT_STORES_MYSQL_URL``; without them, testcontainers starts a server when a Docker engine
answers; otherwise the backend's tests skip. ``CHATKIT_STORES_REQUIRE_BACKENDS=1`` (set by CI)
turns every such skip into a failure, so no run can pass by not testing a backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatkit_stores import SQLStore

TEST_PREFIX = "ckt_"


def _unavailable(backend: str, why: str) -> None:
    message = f"{backend} tests cannot run: {why}"
    if os.environ.get("CHATKIT_STORES_REQUIRE_BACKENDS") == "1":
        pytest.fail(
            message + " (CHATKIT_STORES_REQUIRE_BACKENDS=1 forbids skipping)", pytrace=False
        )
    pytest.skip(message)


def _docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def _server_url(backend: str, env: str, container: str) -> Iterator[str]:
    url = os.environ.get(env)
    if url:
        yield url
        return
    if not _docker_running():
        _unavailable(backend, f"set {env}, or run a Docker engine for testcontainers")
    try:
        from testcontainers.mysql import MySqlContainer  # type: ignore[import-not-found]
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]
    except ImportError:
        _unavailable(backend, "pip install 'testcontainers[postgres,mysql]'")
    if container == "postgres":
        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        with MySqlContainer("mariadb:11", dialect=None) as my:
            yield my.get_connection_url()


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
    for url in _server_url("PostgreSQL", "CHATKIT_STORES_POSTGRES_URL", "postgres"):
        yield _prepare(url)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a MySQL/MariaDB database with the test tables."""
    for url in _server_url("MariaDB", "CHATKIT_STORES_MYSQL_URL", "mysql"):
        yield _prepare(url)
