"""What the fault tests check afterwards: error kinds, consistency, leaked connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from chatkit.store import NotFoundError, Store
from chatkit.types import ThreadItem
from sqlalchemy import exc, text

from chatkit_stores import SQLStore

SQLALCHEMY_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.DisconnectionError,
)
"""How SQLAlchemy reports a failed database connection (the store's documented family).

If the store grows its own error type for an unreachable database, add it here.
"""


def _driver_connection_errors() -> tuple[type[BaseException], ...]:
    import asyncpg
    import pymysql

    return (
        OSError,  # ConnectionRefusedError, ConnectionResetError, ...
        asyncpg.InterfaceError,  # ConnectionDoesNotExistError: "closed in the middle of ..."
        asyncpg.PostgresConnectionError,
        pymysql.err.OperationalError,  # 2003 can't connect, 2013 lost connection, ...
        pymysql.err.InterfaceError,
    )


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` says the database connection failed, in any family.

    SQLAlchemy's connection errors, or a driver's (``OSError``, asyncpg's and PyMySQL's
    connection errors), raised as they are or wrapped (``orig``, ``raise ... from``). Anything
    else (``IntegrityError``, ``AttributeError``, ``AssertionError``, ...) is a store bug.
    """
    if isinstance(error, SQLALCHEMY_CONNECTION_ERRORS):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    driver_errors = _driver_connection_errors()
    link: BaseException | None = error
    while link is not None:
        if isinstance(link, driver_errors):
            return True
        link = getattr(link, "orig", None) or link.__cause__
    return False


def is_sqlalchemy_connection_error(error: BaseException) -> bool:
    """Whether ``error`` is in SQLAlchemy's family, as the store promises."""
    return isinstance(error, SQLALCHEMY_CONNECTION_ERRORS)


def error_name(error: BaseException) -> str:
    """``Type`` (``Type(driver type)`` for wrapped driver errors), for the report."""
    name = type(error).__name__
    orig = getattr(error, "orig", None)
    return f"{name}({type(orig).__name__})" if orig is not None else name


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, *, timeout: float = 10.0
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def all_items(store: Store[Any], thread_id: str, context: Any) -> list[ThreadItem]:
    """Every item of a thread, page by page."""
    items: list[ThreadItem] = []
    after: str | None = None
    while True:
        page = await store.load_thread_items(thread_id, after, 100, "asc", context)
        items += page.data
        if not page.has_more:
            return items
        after = page.after


async def thread_exists(store: Store[Any], thread_id: str, context: Any) -> bool:
    """Whether the thread loads."""
    try:
        await store.load_thread(thread_id, context)
    except NotFoundError:
        return False
    return True


async def orphan_items(store: SQLStore[Any]) -> int:
    """Item rows whose thread row is missing (a half-done delete_thread leaves them)."""
    p = store.table_prefix
    query = (
        f"SELECT COUNT(*) FROM {p}items i WHERE NOT EXISTS "
        f"(SELECT 1 FROM {p}threads t WHERE t.tenant = i.tenant AND t.id = i.thread_id)"
    )
    async with store.engine.connect() as conn:
        return int((await conn.execute(text(query))).scalar_one())


async def busy_sessions(store: SQLStore[Any], client_ports: Collection[int]) -> int:
    """Sessions from ``client_ports`` running a statement or inside a transaction.

    Zero means every call the tests interrupted is over on the server too: nothing is left
    idle in a transaction, and a COMMIT sent just before a cancellation has finished. Only the
    sessions a test made (through the fault proxy) count, whoever else uses the database.
    """
    if not client_ports:
        return 0
    ports = ", ".join(str(int(port)) for port in client_ports)
    if store.engine.dialect.name == "postgresql":
        query = (
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND client_port IN ({ports}) AND state <> 'idle'"
        )
    else:
        hosts = ", ".join(f"'127.0.0.1:{int(port)}'" for port in client_ports)
        query = (
            f"SELECT COUNT(*) FROM information_schema.processlist p WHERE p.host IN ({hosts}) "
            "AND (p.command <> 'Sleep' "
            "OR p.id IN (SELECT trx_mysql_thread_id FROM information_schema.innodb_trx))"
        )
    async with store.engine.connect() as conn:
        return int((await conn.execute(text(query))).scalar_one())
