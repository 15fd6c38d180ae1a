"""(a) on PostgreSQL: an asyncpg pool; asyncpg prepares and caches every statement itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from .raw import RawStore, Values
from .sql_text import Statement


class RawPostgresStore(RawStore):
    """The store calls on a plain asyncpg pool (prepared statements, default pool settings)."""

    style = "numeric"

    def __init__(self, pool: asyncpg.Pool, prefix: str) -> None:
        super().__init__("postgresql", prefix)
        self.pool = pool

    @classmethod
    async def open(cls, url: str, prefix: str, pool_size: int) -> RawPostgresStore:
        """Connect a pool of ``pool_size`` connections."""
        pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
        return cls(pool, prefix)

    async def _column(self, stmt: Statement, values: Values) -> list[Any]:
        return [row[0] for row in await self.pool.fetch(stmt.sql, *stmt.positional(values))]

    async def _execute(self, stmt: Statement, values: Values) -> None:
        await self.pool.execute(stmt.sql, *stmt.positional(values))

    async def _atomic(self, steps: Sequence[tuple[Statement, Values]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for stmt, values in steps:
                await conn.execute(stmt.sql, *stmt.positional(values))

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()
