"""(a) on PostgreSQL: an asyncpg pool; asyncpg prepares and caches every statement itself.

The pool skips asyncpg's default reset query on release (``RESET ALL; UNLISTEN *; ...``): these
calls leave no session state behind, so it would only cost a round trip per call. This is the
fastest honest use of the driver, the limit we measure against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from .raw import RawStore, Values
from .sql_text import Statement


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """No SET, LISTEN or temporary table is ever used, so a released connection is clean."""


class RawPostgresStore(RawStore):
    """The store calls on a plain asyncpg pool (prepared statements, no reset query)."""

    style = "numeric"

    def __init__(self, pool: asyncpg.Pool, prefix: str) -> None:
        super().__init__("postgresql", prefix)
        self.pool = pool

    @classmethod
    async def open(
        cls, url: str, prefix: str, pool_size: int, *, pooler: bool = False
    ) -> RawPostgresStore:
        """Connect a pool of ``pool_size`` connections (``pooler``: unnamed statements, as
        asyncpg's documentation advises behind PgBouncer in transaction mode)."""
        cache = {"statement_cache_size": 0} if pooler else {}
        pool = await asyncpg.create_pool(
            url, min_size=pool_size, max_size=pool_size, reset=_nothing_to_reset, **cache
        )
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
