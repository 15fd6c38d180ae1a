"""Run compiled statements on the driver connection under SQLAlchemy's pool.

The pool (checkout, recycling, pre-ping if asked for, invalidation) stays SQLAlchemy's. What runs
on a checked-out connection is the driver's own call: asyncpg's prepared statements, aiomysql's
cursor, aiosqlite's ``execute_fetchall``; one round trip per statement.

Errors come back as SQLAlchemy's ``DBAPIError`` family, as they did through a SQLAlchemy
``Connection``. A connection that raised anything, cancellation included, is discarded rather
than returned to the pool; one that lost the server also retires every pooled connection made
before it (SQLAlchemy's own rule on a disconnect), so the store recovers by itself once the
database answers again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_only

from . import poolers
from .greenlets import spawn
from .statements import Statement

Row = Sequence[Any]
T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors that mean the connection (not the statement) failed. MySQL client codes: can't connect
# (2003), server gone (2006), lost connection (2013), commands out of sync (2014), server lost
# (2055) and client idle timeout (4031).
_MYSQL_DISCONNECT = {2003, 2006, 2013, 2014, 2055, 4031}
_MYSQL_UNKNOWN_THREAD = 1094


class Driver:
    """One checked-out driver connection; the base runs statements the asyncpg way."""

    pending = False
    """A statement was sent and its answer has not come back (its caller was cancelled
    meanwhile): the server, or SQLite's thread, may still be running it."""

    answers = 0
    """How many statements the server has answered on this connection during the call."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def sent(self, request: Awaitable[T]) -> T:
        """Await the driver's answer to a statement, marked ``pending`` until it comes."""
        self.pending = True
        answer = await request
        self.pending = False
        self.answers += 1
        return answer

    async def fetch(self, statement: Statement, values: dict[str, Any]) -> list[Row]:
        """Run a query and return its rows."""
        rows = await self.sent(self.connection.fetch(statement.sql, *statement.args(values)))
        return list(rows)

    async def execute(self, statement: Statement, values: dict[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        status = await self.sent(self.connection.execute(statement.sql, *statement.args(values)))
        return int(status.rsplit(" ", 1)[-1])

    async def begin(self) -> None:
        """Start a READ COMMITTED transaction (several statements, all or nothing)."""
        await self.sent(self.connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED"))

    async def commit(self) -> None:
        """Commit the transaction ``begin`` started."""
        await self.sent(self.connection.execute("COMMIT"))

    def stop_sql(self) -> str:
        """The statement that ends this connection's session from another connection."""
        return f"SELECT pg_terminate_backend({int(self.connection.get_server_pid())})"

    def in_transaction(self) -> bool:
        """Whether the driver opened a transaction by itself (an engine not in autocommit)."""
        return False

    async def set_setting(self, name: str, value: str) -> None:
        """Set a PostgreSQL setting until the end of the transaction (a bound parameter)."""
        await self.connection.execute("SELECT set_config($1, $2, true)", name, value)

    def is_error(self, error: Exception) -> bool:
        """Whether ``error`` came from the driver or the server (not from the caller's code)."""
        import asyncpg

        return isinstance(error, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError))

    def is_disconnect(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection to the server is gone."""
        import asyncpg

        gone = (
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,
            asyncpg.exceptions.CannotConnectNowError,
        )
        return isinstance(error, (OSError, *gone))


class MySQLDriver(Driver):
    """aiomysql: statements through a cursor (parameters are escaped by the client)."""

    async def fetch(self, statement: Statement, values: dict[str, Any]) -> list[Row]:
        """Run a query and return its rows."""
        async with self.connection.cursor() as cursor:
            await self.sent(cursor.execute(statement.sql, statement.args(values)))
            return list(await cursor.fetchall())

    async def execute(self, statement: Statement, values: dict[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        async with self.connection.cursor() as cursor:
            return int(await self.sent(cursor.execute(statement.sql, statement.args(values))))

    async def begin(self) -> None:
        """Start a READ COMMITTED transaction."""
        async with self.connection.cursor() as cursor:
            await self.sent(cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
        await self.sent(self.connection.begin())

    async def commit(self) -> None:
        """Commit the transaction ``begin`` started."""
        await self.sent(self.connection.commit())

    def stop_sql(self) -> str:
        """``KILL`` of this connection's session, from another connection."""
        return f"KILL CONNECTION {int(self.connection.thread_id())}"

    def in_transaction(self) -> bool:
        """Whether the connection is not in autocommit mode (so a statement opened one)."""
        return not self.connection.get_autocommit()

    def is_error(self, error: Exception) -> bool:
        """Whether ``error`` came from the driver or the server."""
        import pymysql

        return isinstance(error, (OSError, pymysql.err.Error))

    def is_disconnect(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection to the server is gone."""
        import pymysql

        if isinstance(error, (OSError, pymysql.err.InterfaceError)):
            return True
        code = error.args[0] if error.args else None
        return isinstance(error, pymysql.err.OperationalError) and code in _MYSQL_DISCONNECT


class SQLiteDriver(Driver):
    """aiosqlite: one hop to the connection's thread per statement."""

    async def fetch(self, statement: Statement, values: dict[str, Any]) -> list[Row]:
        """Run a query and return its rows."""
        return list(await self._run(statement.sql, statement.args(values)))

    async def execute(self, statement: Statement, values: dict[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        before = self.connection.total_changes  # no hop; the connection is this call's alone
        await self._run(statement.sql, statement.args(values))
        return int(self.connection.total_changes - before)

    async def begin(self) -> None:
        """Take the write lock now, so the transaction never fails to upgrade later."""
        await self._run("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        """Commit the transaction ``begin`` started."""
        await self._run("COMMIT")

    async def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return await self.sent(self.connection.execute_fetchall(sql, args))

    def in_transaction(self) -> bool:
        """Whether sqlite3 opened a transaction implicitly (an engine not in autocommit)."""
        return bool(self.connection.in_transaction)

    async def rollback(self) -> None:
        """Roll back whatever transaction is open (after an error or a cancellation).

        Queued on the connection's thread behind any statement still running there (a
        cancelled ``BEGIN IMMEDIATE`` waiting in the busy handler): sqlite3 rolls back only if
        a transaction is open by then, so it is never asked too early.
        """
        await self.connection.rollback()

    def is_error(self, error: Exception) -> bool:
        """Whether ``error`` came from sqlite3."""
        return isinstance(error, (OSError, sqlite3.Error))

    def is_disconnect(self, error: BaseException) -> bool:
        """A file database has no connection to lose."""
        return False


DRIVERS: dict[str, type[Driver]] = {
    "postgresql": Driver,
    "mysql": MySQLDriver,
    "sqlite": SQLiteDriver,
}


async def run(
    engine: AsyncEngine, backend: str, work: Callable[[Driver], Awaitable[T]], *, atomic: bool
) -> T:
    """Run ``work`` on a pooled connection; ``atomic`` makes it one transaction.

    Checkout, ``work`` and check-in share one greenlet (``spawn``): SQLAlchemy's pool is
    synchronous code that may await, to connect or to close a connection it does not keep.
    A call a transaction-mode pooler made fail before it took effect is retried once
    (``poolers``).
    """
    first = poolers.Attempt(work)
    try:
        return await spawn(_run, engine.sync_engine, DRIVERS[backend], first.work, atomic)
    except exc.DBAPIError as error:
        if not first.may_retry(engine.sync_engine, error, atomic):
            raise
    return await spawn(_run, engine.sync_engine, DRIVERS[backend], work, atomic)


def _run(
    engine: Engine, driver_class: type[Driver], work: Callable[[Driver], Awaitable[T]], atomic: bool
) -> T:
    """The body of ``run``, in its greenlet: every ``await_only`` suspends the calling task."""
    try:
        pooled = engine.raw_connection()
    except exc.DBAPIError:
        raise
    except Exception as error:  # the driver could not connect: the same family as a query
        if isinstance(error, (OSError, engine.dialect.loaded_dbapi.Error)):
            raise exc.OperationalError(None, None, error) from error
        raise
    driver = driver_class(pooled.driver_connection)
    try:
        if atomic:
            await_only(driver.begin())
        result = await_only(work(driver))
        if atomic or driver.in_transaction():
            await_only(driver.commit())
    except BaseException as error:
        _recover(engine, pooled, driver, error)
        if isinstance(error, Exception) and driver.is_error(error):
            raise _translate(error, driver.is_disconnect(error)) from error
        raise
    pooled.close()  # a connection the pool does not keep is closed here, awaiting
    return result


def _recover(engine: Engine, pooled: Any, driver: Driver, error: BaseException) -> None:
    """Leave no connection behind in an unknown state after ``error`` (cancellation included)."""
    reason = error if isinstance(error, Exception) else None
    if isinstance(driver, SQLiteDriver):
        if not driver.pending or isinstance(engine.pool, StaticPool):
            # No statement left running, or the connection is the whole database (in
            # memory): roll back now and keep the connection.
            try:
                await_only(asyncio.shield(driver.rollback()))
            finally:
                pooled.close()
        else:
            # Cancelled while a statement runs in the connection's thread (BEGIN IMMEDIATE
            # waits up to the busy timeout for another process's lock, and SQLite cannot
            # interrupt that wait). The caller goes now; the connection is rolled back once the
            # statement is done, then closed, and never returns to the pool in between.
            _in_background(_discard_when_idle(driver, pooled))
    elif driver.is_disconnect(error):
        engine.pool._invalidate(pooled, reason)  # and every connection made before it
    else:
        try:
            if driver.pending and reason is None:
                # Cancelled while the server runs a statement (waiting for a lock, say): closing
                # our end would not stop it, and it could land after a later write. End the
                # session on the server first.
                _stop_on_server(engine, driver)
        finally:  # even if cancelled again while stopping the statement
            # Mid-statement or mid-transaction: closed without awaiting, which cannot hang.
            pooled.invalidate(reason)


def _stop_on_server(engine: Engine, driver: Driver) -> None:
    """End ``driver``'s server session from a new connection (best effort, never raises)."""
    try:
        args, options = engine.dialect.create_connect_args(engine.url)
        other = engine.dialect.loaded_dbapi.connect(*args, **options)
        try:
            cursor = other.cursor()
            cursor.execute(driver.stop_sql())
            cursor.close()
        finally:
            other.close()
    except Exception as error:  # the session ends anyway once the server notices
        if error.args[:1] != (_MYSQL_UNKNOWN_THREAD,):  # already ended by itself
            log.warning("could not stop a cancelled statement on the server: %s", error)


_BACKGROUND: set[asyncio.Task[None]] = set()


def _in_background(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end whatever happens to the call that started it."""
    task = asyncio.ensure_future(cleanup)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _discard_when_idle(driver: SQLiteDriver, pooled: Any) -> None:
    """Roll back after whatever still runs on the connection, then close it."""
    try:
        await driver.rollback()
    finally:
        await spawn(pooled.invalidate)


def _translate(error: Exception, disconnect: bool) -> Exception:
    """The driver's error as SQLAlchemy's ``DBAPIError`` family (``OperationalError`` if lost)."""
    if disconnect:
        return exc.OperationalError(None, None, error, connection_invalidated=True)
    return exc.DBAPIError.instance(None, None, error, Exception)
