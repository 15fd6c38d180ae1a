"""pytest plugin for the upstream run (``-p upstream_plugin``): store clean-up and a header line.

The upstream tests never close their stores; an open connection pool outlives the test's event
loop and warns when it is collected. After each test this closes the stores the test built, on
the test's own loop; at the end of the session it drops the tables this run made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from helpers import mock_store
from sqlalchemy.ext.asyncio import create_async_engine

from chatkit_stores import SQLStore
from chatkit_stores.sql.dialects import async_url


def pytest_report_header() -> str:
    name = mock_store.backend()
    base = mock_store.BASES[name].__name__
    tables = f", tables {mock_store.RUN_PREFIX}*" if name in mock_store.URL_ENVS else ""
    return f"chatkit-stores upstream shim: backend {name} ({base}{tables})"


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    stores, mock_store.OPEN_STORES[:] = list(mock_store.OPEN_STORES), []
    for store in stores:
        if isinstance(store, SQLStore):
            await store.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    name = mock_store.backend()
    if name in mock_store.URL_ENVS and mock_store.table_prefixes():
        with ThreadPoolExecutor(1) as pool:  # pytest-asyncio may still own this thread's loop
            pool.submit(asyncio.run, _drop_tables(mock_store.server_url(name))).result()


async def _drop_tables(url: str) -> None:
    """Drop every table whose name starts with this run's prefix."""

    def drop(conn: sa.Connection) -> None:
        metadata = sa.MetaData()
        metadata.reflect(conn, only=lambda table, _: table.startswith(mock_store.RUN_PREFIX))
        metadata.drop_all(conn)

    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(drop)
    finally:
        await engine.dispose()
