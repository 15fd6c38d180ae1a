"""pytest plugin (entry point ``pytest11``): database fixtures for testing stores.

``postgres_url`` and ``mysql_url`` give the URL of a real server: from
``CHATKIT_STORES_POSTGRES_URL`` / ``CHATKIT_STORES_MYSQL_URL`` when set, else from a container
that testcontainers starts when a Docker engine answers, else the test skips. With
``CHATKIT_STORES_REQUIRE_BACKENDS=1`` a backend that cannot be reached fails the test instead,
so a CI run can never pass by not testing a backend.

This module is loaded by every pytest run where chatkit-stores is installed: it imports
nothing heavy until a fixture is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

REQUIRE_ENV = "CHATKIT_STORES_REQUIRE_BACKENDS"
POSTGRES_ENV = "CHATKIT_STORES_POSTGRES_URL"
MYSQL_ENV = "CHATKIT_STORES_MYSQL_URL"
POSTGRES_IMAGE = "postgres:16-alpine"
MARIADB_IMAGE = "mariadb:11"


def unavailable(backend: str, why: str) -> None:
    """Skip the test (or fail it when backends are required) because ``backend`` is missing."""
    message = f"{backend} tests cannot run: {why}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


def docker_running() -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def server_url(backend: str) -> Iterator[str]:
    """Yield a URL for ``postgres`` or ``mysql``: environment, else testcontainers, else skip."""
    name, env = {"postgres": ("PostgreSQL", POSTGRES_ENV), "mysql": ("MariaDB", MYSQL_ENV)}[backend]
    url = os.environ.get(env)
    if url:
        yield url
        return
    if not docker_running():
        unavailable(name, f"set {env}, or run a Docker engine for testcontainers")
    try:
        from testcontainers.mysql import MySqlContainer
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        unavailable(name, "pip install 'testcontainers[postgres,mysql]' to start one in Docker")
    if backend == "postgres":
        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        with MySqlContainer(MARIADB_IMAGE, dialect=None) as container:
            yield container.get_connection_url()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database (environment, testcontainers, or skip)."""
    yield from server_url("postgres")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a MySQL/MariaDB database (environment, testcontainers, or skip)."""
    yield from server_url("mysql")
