"""An opt-in pytest plugin: database and S3 fixtures for testing stores.

Nothing loads it by itself; a project that wants its fixtures asks for it, in its top-level
``conftest.py`` (``pytest_plugins = ["chatkit_stores.pytest_plugin"]``) or on the command line
(``pytest -p chatkit_stores.pytest_plugin``). The conformance suite needs none of it.

``postgres_url`` and ``mysql_url`` give the URL of a real server: from
``CHATKIT_STORES_POSTGRES_URL`` / ``CHATKIT_STORES_MYSQL_URL`` when set, else from a container
that testcontainers starts when a Docker engine answers, else the test skips. With
``CHATKIT_STORES_REQUIRE_BACKENDS=1`` a backend that cannot be reached fails the test instead,
so a CI run can never pass by not testing a backend.

``s3_endpoint`` gives the endpoint URL of an S3 server: ``CHATKIT_STORES_S3_ENDPOINT`` when set
(credentials from the usual AWS variables), else a moto server in this process, else a MinIO
container, else the test skips. ``s3_credentials()`` gives the boto3 client arguments for it.
"""

from __future__ import annotations

import importlib.util
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
S3_ENV = "CHATKIT_STORES_S3_ENDPOINT"
MINIO_IMAGE = "minio/minio:RELEASE.2022-12-02T19-19-22Z"
S3_TEST_CREDENTIALS = {
    "aws_access_key_id": "chatkit-test",
    "aws_secret_access_key": "chatkit-test-secret",
    "region_name": "us-east-1",
}
"""What the moto server and the MinIO container that ``s3_endpoint`` starts accept."""


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


def s3_credentials() -> dict[str, str]:
    """``boto3.client`` arguments (keys, region) for the server ``s3_endpoint`` gives."""
    if os.environ.get(S3_ENV):
        return {"region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    return dict(S3_TEST_CREDENTIALS)


def s3_server() -> Iterator[str]:
    """Yield an S3 endpoint URL: environment, else moto, else MinIO in Docker, else skip."""
    url = os.environ.get(S3_ENV)
    if url:
        yield url
        return
    if importlib.util.find_spec("moto") is not None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            pass
        else:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            try:
                yield f"http://{host}:{port}"
            finally:
                server.stop()
            return
    if not docker_running():
        unavailable("S3", f"set {S3_ENV}, pip install 'moto[server]', or run a Docker engine")
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import HttpWaitStrategy
    except ImportError:
        unavailable("S3", "pip install testcontainers (or 'moto[server]') to start a server")
    container = (
        DockerContainer(MINIO_IMAGE)
        .with_exposed_ports(9000)
        .with_env("MINIO_ROOT_USER", S3_TEST_CREDENTIALS["aws_access_key_id"])
        .with_env("MINIO_ROOT_PASSWORD", S3_TEST_CREDENTIALS["aws_secret_access_key"])
        .with_command("server /data --address :9000")
        .waiting_for(HttpWaitStrategy(9000, "/minio/health/live"))
    )
    with container:
        yield f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9000)}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of an S3 server (environment, moto, MinIO in Docker, or skip)."""
    yield from s3_server()
