"""(a) on SQLite: aiosqlite connections in a small queue, one worker-thread hop per statement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiosqlite

from .raw import RawStore, Values
from .sql_text import Statement

BUSY_TIMEOUT_S = 30.0


def sqlite_timestamp(moment: datetime) -> str:
    """The text SQLAlchemy stores for a ``DateTime`` on SQLite (always six fraction digits)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class RawSQLiteStore(RawStore):
    """The store calls on aiosqlite connections in autocommit (WAL mode)."""

    style = "named"

    def __init__(self, connections: list[aiosqlite.Connection], prefix: str) -> None:
        super().__init__("sqlite", prefix)
        self.connections = connections
        self.free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for conn in connections:
            self.free.put_nowait(conn)

    @classmethod
    async def open(cls, path: str, prefix: str, pool_size: int) -> RawSQLiteStore:
        """Open ``pool_size`` connections to the database file."""
        connections = []
        for _ in range(pool_size):
            conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            await conn.execute("PRAGMA journal_mode=WAL")
            connections.append(conn)
        return cls(connections, prefix)

    def timestamp(self, moment: datetime) -> Any:
        """Timestamps as text, in the format the other variants write."""
        return sqlite_timestamp(super().timestamp(moment))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        conn = await self.free.get()
        try:
            yield conn
        finally:
            self.free.put_nowait(conn)

    async def _column(self, stmt: Statement, values: Values) -> list[Any]:
        async with self._connection() as conn:
            return [row[0] for row in await conn.execute_fetchall(stmt.sql, values)]

    async def _execute(self, stmt: Statement, values: Values) -> None:
        async with self._connection() as conn:
            await conn.execute_fetchall(stmt.sql, values)

    async def _atomic(self, steps: Sequence[tuple[Statement, Values]]) -> None:
        async with self._connection() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt, values in steps:
                    await conn.execute(stmt.sql, values)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def close(self) -> None:
        """Close every connection."""
        for conn in self.connections:
            await conn.close()
