"""The project's test databases and S3 buckets, shared by the main suite and ``tests/faults``.

The plugin's URL fixtures, with our test tables created once (and dropped at the end of the
session when it created them); an admin helper running statements on an AUTOCOMMIT connection;
``drop_tables`` for the tables of a prefix, version table included; an S3 server (moto
checking presigned URLs as S3 does, or ``CHATKIT_STORES_S3_ENDPOINT``), a boto3 client, its
credentials in the environment, and a fresh bucket per test. A test run leaves the database
servers as it found them (CI checks it with ``.ci/servers``). The package's opt-in plugin
``chatkit_stores.pytest_plugin`` is not loaded; its helpers say where URLs come from
(environment variables, else testcontainers, else skip; ``CHATKIT_STORES_REQUIRE_BACKENDS=1``
turns skips into failures).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from chatkit_stores import SQLStore
from chatkit_stores.pytest_plugin import (
    S3_ENV,
    S3_TEST_CREDENTIALS,
    s3_credentials,
    s3_server,
    server_url,
)
from s3_signatures import checked_moto_server

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

TEST_PREFIX = "ckt_"
T = TypeVar("T")


def _in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in a new event loop (a fixture may be requested inside a running loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@contextmanager
def _test_tables(url: str) -> Iterator[str]:
    """The test tables in ``url`` for a session: created if missing, then dropped if created."""

    async def create() -> bool:
        store = SQLStore.from_url(url, table_prefix=TEST_PREFIX)
        try:
            from chatkit_stores.migrations import current

            created = await current(store.engine, prefix=TEST_PREFIX) is None
            await store.create_schema()
            return created
        finally:
            await store.close()

    created = _in_thread(create())
    try:
        yield url
    finally:
        if created:
            _in_thread(drop_tables(url, TEST_PREFIX))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database with the test tables."""
    for url in server_url("postgres"):
        with _test_tables(url):
            yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a MySQL/MariaDB database with the test tables."""
    for url in server_url("mysql"):
        with _test_tables(url):
            yield url


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where attachment tests keep metadata: ``memory``, or a URL of each SQL backend."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def admin(url: str, *statements: str) -> None:
    """Run ``statements`` in order on an AUTOCOMMIT connection (DDL, roles, CREATE DATABASE)."""
    # Imported here, like boto3 below: every test run loads this file, and they take seconds.
    from sqlalchemy.ext.asyncio import create_async_engine

    from chatkit_stores.sql.dialects import async_url

    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def drop_tables(target: str | AsyncEngine, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix``: data and version tables, extras.

    ``metadata.drop_all`` alone leaves the ``{prefix}stores_alembic_version`` table behind.
    """
    await _drop_where(target, lambda name: name.startswith(prefix))


async def _drop_where(target: str | AsyncEngine, chosen: Callable[[str], bool]) -> None:
    """Drop the tables whose names are ``chosen``."""
    from sqlalchemy import inspect
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

    from chatkit_stores.sql.dialects import async_url

    def drop(conn: Any) -> None:
        quote = conn.dialect.identifier_preparer.quote
        for name in inspect(conn).get_table_names():
            if chosen(name):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")

    own = not isinstance(target, AsyncEngine)
    engine = create_async_engine(async_url(target)) if own else target
    try:
        async with engine.begin() as conn:
            await conn.run_sync(drop)
    finally:
        if own:
            await engine.dispose()


@contextmanager
def new_tables_dropped(url: str, *prefixes: str) -> Iterator[str]:
    """Yield ``url``; afterwards drop the tables with these prefixes that were not there before.

    For code that uses a fixed prefix (the default ``chatkit_`` of examples and the demo).
    """

    async def names() -> set[str]:
        from sqlalchemy import inspect
        from sqlalchemy.ext.asyncio import create_async_engine

        from chatkit_stores.sql.dialects import async_url

        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as conn:
                found: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
        finally:
            await engine.dispose()
        return {name for name in found if name.startswith(prefixes)}

    before = _in_thread(names())
    try:
        yield url
    finally:
        new = _in_thread(names()) - before
        _in_thread(_drop_where(url, new.__contains__))


@pytest.fixture
def drop_new_tables() -> Iterator[Callable[..., str]]:
    """``drop_new_tables(url, *prefixes)`` returns ``url``; after the test, the tables with
    these prefixes (default: ``chatkit_``) that ``url`` did not have then are dropped."""
    with ExitStack() as stack:

        def register(url: str, *prefixes: str) -> str:
            return stack.enter_context(new_tables_dropped(url, *(prefixes or ("chatkit_",))))

        yield register


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 server: ``CHATKIT_STORES_S3_ENDPOINT``, else moto checking presigned URLs, else
    what the package's plugin finds (MinIO in Docker, or skip)."""
    if os.environ.get(S3_ENV) or importlib.util.find_spec("moto") is None:
        yield from s3_server()
        return
    with checked_moto_server(S3_TEST_CREDENTIALS) as url:
        yield url


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 S3 client of the ``s3_endpoint`` server (SigV4, as presigned URLs need)."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4")
    return boto3.client("s3", endpoint_url=s3_endpoint, config=config, **s3_credentials())


@pytest.fixture
def s3_env_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``s3_credentials()``, its keys also set in the AWS variables for clients boto3 makes."""
    credentials = s3_credentials()
    for name, variable in [
        ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ]:
        if name in credentials:
            monkeypatch.setenv(variable, credentials[name])
    return credentials


@pytest.fixture
def bucket(s3_client: Any) -> Iterator[str]:
    """A new bucket; afterwards its open uploads are aborted, its objects and itself deleted."""
    name = f"ckt-{uuid.uuid4().hex[:24]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for upload in open_uploads(s3_client, name):
        s3_client.abort_multipart_upload(
            Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for key in bucket_keys(s3_client, name):
        s3_client.delete_object(Bucket=name, Key=key)
    s3_client.delete_bucket(Bucket=name)


def bucket_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """The keys of the objects in ``bucket`` under ``prefix``."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def open_uploads(client: Any, bucket: str) -> list[Any]:
    """The multipart uploads of ``bucket`` started and neither completed nor aborted."""
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


CITUS_ENV = "CHATKIT_STORES_CITUS_URL"
CITUS_REQUIRED_ENV = "CHATKIT_STORES_REQUIRE_CITUS"


@pytest.fixture(scope="session")
def citus_url() -> str:
    """URL of a Citus coordinator (``CHATKIT_STORES_CITUS_URL``; ``.ci/citus`` starts one).

    Without it the Citus tests skip, unless ``CHATKIT_STORES_REQUIRE_CITUS=1`` (the Citus run
    of CI), where they fail.
    """
    url = os.environ.get(CITUS_ENV)
    if not url:
        message = f"Citus tests cannot run: set {CITUS_ENV} (.ci/citus starts a cluster)"
        if os.environ.get(CITUS_REQUIRED_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url
