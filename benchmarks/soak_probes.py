"""What the soak benchmark watches: the process, the database server, and the logs.

Process figures come from ``/proc`` (Linux; ``None`` elsewhere). Server figures come from an
admin connection of the raw driver, which leaves itself out of every count.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
from collections import Counter
from contextlib import closing
from typing import Any

from greenlet import greenlet
from sqlalchemy.engine import make_url

from .variants import Target
from .variants.raw_mysql import connect_args

PG_ACTIVITY = """
SELECT count(*),
       count(*) FILTER (WHERE state LIKE 'idle in transaction%'),
       count(*) FILTER (WHERE state = 'active')
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
"""Connections, idle ones inside a transaction, and ones running a statement."""
MYSQL_ACTIVITY = """
SELECT COUNT(*),
       COUNT(t.trx_id),
       COALESCE(SUM(p.COMMAND = 'Query'), 0)
FROM information_schema.PROCESSLIST p
LEFT JOIN information_schema.INNODB_TRX t
  ON t.trx_mysql_thread_id = p.ID AND p.COMMAND = 'Sleep'
WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()
"""
"""The same from MariaDB/MySQL's processlist (what ``SHOW PROCESSLIST`` shows)."""


def process() -> dict[str, Any]:
    """RSS in MB, objects the garbage collector tracks, live greenlets, open file descriptors."""
    gc.collect()
    objects = gc.get_objects()
    figures = {
        "rss_mb": _rss_mb(),
        "objects": len(objects),
        "greenlets": sum(isinstance(o, greenlet) for o in objects),
        "fds": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None,
    }
    del objects
    return figures


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


TABLES = ("threads", "items", "attachments")


class Server:
    """The database as the benchmark watches it; this base is the memory store (no server)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def activity(self) -> dict[str, int | None]:
        """Server connections (besides ours), idle in a transaction, running a statement."""
        return {"connections": None, "idle_in_transaction": None, "running": None}

    async def rows(self, store: Any) -> dict[str, int]:
        """Rows of the threads, items and attachments tables."""
        return {table: len(getattr(store, f"_{table}")) for table in TABLES}

    async def write_lock_free(self) -> bool | None:
        """SQLite: whether another connection can take the write lock at once."""
        return None

    async def close(self) -> None:
        """Close the admin connection."""


class SQLiteFile(Server):
    """A SQLite database file, read with the sqlite3 module."""

    def __init__(self, path: str, prefix: str) -> None:
        super().__init__(prefix)
        self.path = path

    async def rows(self, store: Any) -> dict[str, int]:
        """Rows of the threads, items and attachments tables."""
        return await asyncio.to_thread(self._rows)

    def _rows(self) -> dict[str, int]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            sql = "SELECT COUNT(*) FROM {}{}"
            return {t: conn.execute(sql.format(self.prefix, t)).fetchone()[0] for t in TABLES}

    async def write_lock_free(self) -> bool | None:
        """Whether another connection can take the write lock at once."""
        return await asyncio.to_thread(self._try_write_lock)

    def _try_write_lock(self) -> bool:
        with closing(sqlite3.connect(self.path, timeout=0)) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # database is locked
                return False
            conn.rollback()
            return True


class Postgres(Server):
    """An asyncpg admin connection; ``pg_stat_activity`` of the database."""

    def __init__(self, conn: Any, prefix: str) -> None:
        super().__init__(prefix)
        self.conn = conn

    async def activity(self) -> dict[str, int | None]:
        """Connections, idle in a transaction, running a statement (``pg_stat_activity``)."""
        return _activity(tuple(await self.conn.fetchrow(PG_ACTIVITY)))

    async def rows(self, store: Any) -> dict[str, int]:
        """Rows of the threads, items and attachments tables."""
        return {
            t: await self.conn.fetchval(f"SELECT COUNT(*) FROM {self.prefix}{t}") for t in TABLES
        }

    async def close(self) -> None:
        """Close the admin connection."""
        await self.conn.close()


class MySQL(Server):
    """An aiomysql admin connection in autocommit; the processlist of the database."""

    def __init__(self, conn: Any, prefix: str) -> None:
        super().__init__(prefix)
        self.conn = conn

    async def _row(self, sql: str) -> tuple[Any, ...]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql)
            return tuple(await cursor.fetchone())

    async def activity(self) -> dict[str, int | None]:
        """Connections, idle in a transaction, running a statement (``PROCESSLIST``)."""
        return _activity(await self._row(MYSQL_ACTIVITY))

    async def rows(self, store: Any) -> dict[str, int]:
        """Rows of the threads, items and attachments tables."""
        return {t: (await self._row(f"SELECT COUNT(*) FROM {self.prefix}{t}"))[0] for t in TABLES}

    async def close(self) -> None:
        """Close the admin connection."""
        self.conn.close()


def _activity(row: tuple[Any, ...]) -> dict[str, int | None]:
    return dict(zip(("connections", "idle_in_transaction", "running"), map(int, row), strict=True))


async def open_server(target: Target | None, prefix: str) -> Server:
    """The admin view of ``target`` (``None``: the memory store)."""
    if target is None:
        return Server(prefix)
    if target.backend == "sqlite":
        return SQLiteFile(target.sqlite_path, prefix)
    if target.backend == "postgresql":
        import asyncpg

        url = make_url(target.url).set(drivername="postgresql")
        return Postgres(await asyncpg.connect(url.render_as_string(hide_password=False)), prefix)
    import aiomysql  # type: ignore[import-untyped]

    return MySQL(await aiomysql.connect(autocommit=True, **connect_args(target.url)), prefix)


class Noise(logging.Handler):
    """Counts what would have reached the logs: records of WARNING and up, and the event loop's
    exception handler (``Future exception was never retrieved`` and the like), silencing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self._previous: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        """Count a log record by its logger and first line."""
        first = record.getMessage().splitlines()[0][:80] if record.getMessage() else ""
        self.counts[f"log {record.name}: {first}"] += 1

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        kind = f" ({type(error).__name__}: {str(error)[:60]})" if error else ""
        self.counts[f"loop: {context.get('message', '')[:60]}{kind}"] += 1

    def __enter__(self) -> Noise:
        logging.getLogger().addHandler(self)
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        return self

    def __exit__(self, *_: object) -> None:
        gc.collect()  # futures whose exception nobody retrieved report it when collected
        asyncio.get_running_loop().set_exception_handler(self._previous)
        logging.getLogger().removeHandler(self)

    @property
    def total(self) -> int:
        """How many records and loop errors were counted."""
        return sum(self.counts.values())
