"""(a) on MySQL/MariaDB: an aiomysql pool in autocommit (the driver has no server-side prepare)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]

from .raw import RawStore, Values
from .sql_text import Statement


def connect_args(url: str) -> dict[str, Any]:
    """aiomysql connection arguments from a ``mysql://user:password@host:port/db`` URL."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/"),
        "charset": "utf8mb4",
    }


class RawMySQLStore(RawStore):
    """The store calls on a plain aiomysql pool."""

    style = "pyformat"

    def __init__(self, pool: aiomysql.Pool, prefix: str) -> None:
        super().__init__("mysql", prefix)
        self.pool = pool

    @classmethod
    async def open(cls, url: str, prefix: str, pool_size: int) -> RawMySQLStore:
        """Connect a pool of ``pool_size`` autocommit connections."""
        pool = await aiomysql.create_pool(
            minsize=pool_size, maxsize=pool_size, autocommit=True, **connect_args(url)
        )
        return cls(pool, prefix)

    async def _column(self, stmt: Statement, values: Values) -> list[Any]:
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(stmt.sql, values)
            return [row[0] for row in await cursor.fetchall()]

    async def _execute(self, stmt: Statement, values: Values) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(stmt.sql, values)

    async def _atomic(self, steps: Sequence[tuple[Statement, Values]]) -> None:
        async with self.pool.acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cursor:
                    for stmt, values in steps:
                        await cursor.execute(stmt.sql, values)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def close(self) -> None:
        """Close the pool."""
        self.pool.close()
        await self.pool.wait_closed()
