"""Run compiled statements on the driver connection under SQLAlchemy's pool.

The pool (checkout, recycling, pre-ping if asked for, invalidation) stays SQLAlchemy's. What runs
on a checked-out connection is the driver's own call: asyncpg's prepared statements, aiomysql's
cursor, aiosqlite's ``execute_fetchall``; one round trip per statement.

Errors come back as SQLAlchemy's ``DBAPIError`` family, as they did through a SQLAlchemy
``Connection``. A connection that raised anything, cancellation included, is discarded rather
than returned to the pool; one that lost the server also retires every pooled connection made
before it (SQLAlchemy's own rule on a disconnect), so the store recovers by itself once the
database answers again.

A caller that gives up (cancellation) must leave no statement that could still run later and
land after a write made since. PostgreSQL: asyncpg sends the server a cancel request for the
statement, and the connection's close waits for it. MySQL/MariaDB: the session is ended with
``KILL`` from another connection, one at a time per engine. SQLite: a statement never waits
in SQLite's busy handler (which nothing can interrupt); the driver waits for a lock between
attempts instead, where a cancellation stops it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import event, exc
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

SQLITE_BUSY = 5
"""SQLite's primary result code for a lock held by another connection (extended codes differ)."""
SQLITE_PAUSES_S = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)
"""Pauses between attempts to take a busy SQLite lock (SQLite's own busy handler's schedule)."""
_OWN_BUSY_TIMEOUT = "chatkit_stores.sqlite_busy_timeout"
"""Key, in a pooled SQLite connection's ``info``: its busy timeout while the driver set it to 0."""
_DRIVER_CHECKOUT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chatkit_stores_driver_checkout", default=False
)


class Driver:
    """One checked-out driver connection: what every backend's driver shares."""

    pending = False
    """A statement was sent and its answer has not come back (its caller was cancelled
    meanwhile): the server, or SQLite's thread, may still be running it."""

    stopped_from_outside = False
    """Whether a statement whose caller gave up must be stopped from another connection
    (``stop_sql``), whose arguments are then remembered from the first connection made."""

    answers = 0
    """How many statements the server has answered on this connection during the call."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def prepare(self, engine: Engine, pooled: Any) -> None:
        """Make a connection ready for the driver, once per checkout (nothing by default)."""

    async def sent(self, request: Awaitable[T]) -> T:
        """Await the driver's answer to a statement, marked ``pending`` until it comes."""
        self.pending = True
        try:
            answer = await request
        except Exception:
            self.pending = False  # answered, with an error
            raise
        self.pending = False
        self.answers += 1
        return answer

    async def fetch(self, statement: Statement, values: dict[str, Any]) -> list[Row]:
        """Run a query and return its rows."""
        raise NotImplementedError

    async def execute(self, statement: Statement, values: dict[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        raise NotImplementedError

    async def begin(self) -> None:
        """Start a transaction (several statements, all or nothing)."""
        raise NotImplementedError

    async def commit(self) -> None:
        """Commit the transaction ``begin`` started."""
        raise NotImplementedError

    async def set_setting(self, name: str, value: str) -> None:
        """Set a server setting until the end of the transaction (PostgreSQL only)."""
        raise NotImplementedError(f"{type(self).__name__} has no transaction-local settings")

    def stop_sql(self) -> str | None:
        """The statement that ends this connection's session from another connection, if one
        is needed to stop a statement whose caller gave up."""
        return None

    def in_transaction(self) -> bool:
        """Whether the driver opened a transaction by itself (an engine not in autocommit)."""
        return False

    def is_error(self, error: Exception) -> bool:
        """Whether ``error`` came from the driver or the server (not from the caller's code)."""
        raise NotImplementedError

    def is_disconnect(self, error: BaseException) -> bool:
        """Whether ``error`` means the connection to the server is gone."""
        raise NotImplementedError


class PostgresDriver(Driver):
    """asyncpg: prepared statements, cached per connection by asyncpg.

    A cancelled statement needs no ``stop_sql``: asyncpg sends a cancel request (a separate
    short-lived socket, which takes no connection slot on the server), and SQLAlchemy's
    ``invalidate`` closes the connection with asyncpg's graceful ``close``, which waits for
    that request to be answered first.
    """

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

    async def set_setting(self, name: str, value: str) -> None:
        """Set a PostgreSQL setting until the end of the transaction, on Citus workers too.

        ``SET LOCAL``, not ``set_config(..., true)``, which Citus does not pass on to the
        workers; ``citus.propagate_set_commands = 'local'`` makes it pass ``SET LOCAL`` on
        (without Citus that is an unused placeholder setting). ``SET`` takes no bound
        parameter, so the value (a tenant from the request) is sent as an escape string
        constant, ``E'...'`` with ``\\`` and ``'`` doubled, which reads the same whatever
        ``standard_conforming_strings`` says; a NUL, which no PostgreSQL text can hold, is
        refused.
        """
        parts = name.split(".")
        if len(parts) != 2 or not all(p.isascii() and p.isidentifier() for p in parts):
            raise ValueError(f"not a custom setting name: {name!r}")
        if "\x00" in value:
            raise ValueError("a setting's value cannot contain NUL characters")
        literal = "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
        await self.connection.execute(
            "SET LOCAL citus.propagate_set_commands = 'local';"
            f' SET LOCAL "{parts[0]}"."{parts[1]}" = {literal}'
        )

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

    stopped_from_outside = True

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
    """aiosqlite: one hop to the connection's thread per statement.

    A statement that finds another connection's lock fails at once (busy timeout 0 while the
    driver has the connection) and is tried again after a pause, for as long as the
    connection's own busy timeout: a caller cancelled meanwhile leaves no statement waiting in
    SQLite's busy handler, which could take the lock seconds later and write after a change
    made since. Only in autocommit mode (this library's engines), where a statement that found
    the lock busy ran nothing: an engine that opens transactions implicitly keeps SQLite's
    busy handler.
    """

    patience: float | None = None
    """Seconds to keep trying a busy lock (the connection's busy timeout); None: SQLite waits."""

    async def prepare(self, engine: Engine, pooled: Any) -> None:
        """Turn SQLite's busy wait off on this connection (once), remembering its timeout."""
        patience = pooled.info.get(_OWN_BUSY_TIMEOUT)
        if patience is None and self.connection.isolation_level is None:
            rows = await self.connection.execute_fetchall("PRAGMA busy_timeout")
            await self.connection.execute_fetchall("PRAGMA busy_timeout = 0")
            patience = pooled.info[_OWN_BUSY_TIMEOUT] = rows[0][0] / 1000
            if not event.contains(engine, "checkout", _restore_busy_timeout):
                event.listen(engine, "checkout", _restore_busy_timeout)
        self.patience = patience

    async def fetch(self, statement: Statement, values: dict[str, Any]) -> list[Row]:
        """Run a query and return its rows."""
        return list(await self._statement(statement.sql, statement.args(values)))

    async def execute(self, statement: Statement, values: dict[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        before = self.connection.total_changes  # no hop; the connection is this call's alone
        await self._statement(statement.sql, statement.args(values))
        return int(self.connection.total_changes - before)

    async def begin(self) -> None:
        """Take the write lock now, so the transaction never fails to upgrade later."""
        await self._statement("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        """Commit the transaction ``begin`` started."""
        await self._statement("COMMIT")

    async def _statement(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement, trying again while another connection holds the lock."""
        try:
            return await self.sent(self.connection.execute_fetchall(sql, args))
        except sqlite3.OperationalError as error:
            if not self._may_wait(error):
                raise
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self.patience or 0.0)
        pauses = _pauses()
        while True:
            pause = next(pauses)
            if loop.time() + pause > give_up:  # the last try: its error is the caller's
                return await self.sent(self.connection.execute_fetchall(sql, args))
            await asyncio.sleep(pause)  # a cancellation here leaves nothing running
            try:
                return await self.sent(self.connection.execute_fetchall(sql, args))
            except sqlite3.OperationalError as error:
                if not self._may_wait(error):
                    raise

    def _may_wait(self, error: sqlite3.OperationalError) -> bool:
        """Whether to try again later: the lock was busy and the statement ran nothing."""
        return self.patience is not None and _is_busy(error) and not self.connection.in_transaction

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


def _is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite answered that another connection holds the lock (SQLITE_BUSY)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    return code == SQLITE_BUSY if code is not None else str(error) == "database is locked"


def _pauses() -> Iterator[float]:
    """SQLite's busy-handler schedule, then its last pause for ever."""
    yield from SQLITE_PAUSES_S
    while True:
        yield SQLITE_PAUSES_S[-1]


def _restore_busy_timeout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """On a checkout by SQLAlchemy itself (not the driver), give back the busy timeout."""
    if _DRIVER_CHECKOUT.get():
        return
    seconds = record.info.pop(_OWN_BUSY_TIMEOUT, None)
    if seconds is not None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
        cursor.close()


DRIVERS: dict[str, type[Driver]] = {
    "postgresql": PostgresDriver,
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
    if backend != "postgresql":  # only PostgreSQL meets transaction-mode poolers
        return await spawn(_checked_out, engine.sync_engine, DRIVERS[backend], work, atomic)
    first = poolers.Attempt(work)
    try:
        return await spawn(_checked_out, engine.sync_engine, DRIVERS[backend], first.work, atomic)
    except exc.DBAPIError as error:
        if not first.may_retry(engine.sync_engine, error, atomic):
            raise
    return await spawn(_checked_out, engine.sync_engine, DRIVERS[backend], work, atomic)


def _checked_out(
    engine: Engine, driver_class: type[Driver], work: Callable[[Driver], Awaitable[T]], atomic: bool
) -> T:
    """The body of ``run``, in its greenlet: every ``await_only`` suspends the calling task."""
    if driver_class.stopped_from_outside:
        _Stopper.of(engine)  # before the first connection, to see how it connects
    checkout = _DRIVER_CHECKOUT.set(True)
    try:
        pooled = engine.raw_connection()
    except exc.DBAPIError:
        raise
    except Exception as error:  # the driver could not connect: the same family as a query
        if isinstance(error, (OSError, engine.dialect.loaded_dbapi.Error)):
            raise exc.OperationalError(None, None, error) from error
        raise
    finally:
        _DRIVER_CHECKOUT.reset(checkout)
    driver = driver_class(pooled.driver_connection)
    try:
        await_only(driver.prepare(engine, pooled))
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
            # Cancelled while a statement runs in the connection's thread (SQLite cannot
            # interrupt it). The caller goes now; the connection is rolled back once the
            # statement is done, then closed, and never returns to the pool in between.
            _in_background(_discard_when_idle(driver, pooled))
    elif driver.is_disconnect(error):
        engine.pool._invalidate(pooled, reason)  # and every connection made before it
    else:
        try:
            stop = driver.stop_sql() if driver.pending and reason is None else None
            if stop is not None:
                # Cancelled while the server runs a statement (waiting for a lock, say): closing
                # our end would not stop it, and it could land after a later write. End the
                # session on the server first.
                _Stopper.of(engine).stop(stop)
        finally:  # even if cancelled again while stopping the statement
            pooled.invalidate(reason)


class _Stopper:
    """Ends abandoned sessions of one engine's server, one at a time (so a storm of
    cancellations adds at most one connection beyond the pool), connecting as the pool does."""

    _of: weakref.WeakKeyDictionary[Engine, _Stopper] = weakref.WeakKeyDictionary()

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connect_args: tuple[list[Any], dict[str, Any]] | None = None
        self.locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        event.listen(engine, "do_connect", self._remember)

    @classmethod
    def of(cls, engine: Engine) -> _Stopper:
        """The stopper of ``engine``, made at its first call."""
        stopper = cls._of.get(engine)
        if stopper is None:
            stopper = cls._of[engine] = cls(engine)
        return stopper

    def _remember(
        self, _dialect: Any, _record: Any, args: list[Any], params: dict[str, Any]
    ) -> None:
        """Keep the arguments the pool connects with (an engine's own ``connect_args`` too)."""
        self.connect_args = (list(args), dict(params))

    def stop(self, sql: str) -> None:
        """Run ``sql`` on a new connection (best effort: never raises)."""
        lock = self.locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        await_only(lock.acquire())
        try:
            args, params = self.connect_args or self.engine.dialect.create_connect_args(
                self.engine.url
            )
            other = self.engine.dialect.loaded_dbapi.connect(*args, **params)
            try:
                cursor = other.cursor()
                cursor.execute(sql)
                cursor.close()
            finally:
                other.close()
        except Exception as error:  # the session ends anyway once the server notices
            if error.args[:1] != (_MYSQL_UNKNOWN_THREAD,):  # already ended by itself
                log.warning("could not stop a cancelled statement on the server: %s", error)
        finally:
            lock.release()


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
