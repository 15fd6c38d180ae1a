"""Fast set-up: empty the benchmark tables and bulk-load rows with the raw drivers.

PostgreSQL uses COPY, MySQL/MariaDB multi-row INSERTs (aiomysql's ``executemany``), SQLite
``executemany`` in one transaction. Rows are tuples in the column order below.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import text

from .variants import Target
from .variants.raw_mysql import connect_args
from .variants.raw_sqlite import sqlite_timestamp

THREAD_COLUMNS = ("tenant", "id", "created_at", "data")
ITEM_COLUMNS = ("tenant", "thread_id", "id", "type", "created_at", "data")
BATCH = 5_000

Rows = Iterable[tuple[Any, ...]]


def batches(rows: Rows, size: int = BATCH) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` in lists of at most ``size``."""
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


TABLES = ("items", "attachments", "threads")


async def empty_tables(store: Any, prefix: str) -> None:
    """Delete every row of the tables with ``prefix`` (TRUNCATE where the database has it)."""
    async with store.engine.begin() as conn:
        for table in TABLES:
            empty = "DELETE FROM" if conn.dialect.name == "sqlite" else "TRUNCATE TABLE"
            await conn.execute(text(f"{empty} {prefix}{table}"))


async def load(target: Target, table: str, columns: Sequence[str], rows: Rows) -> int:
    """Insert ``rows`` into ``table``; return how many."""
    if target.backend == "postgresql":
        return await _copy_postgres(target.url, table, columns, rows)
    if target.backend == "mysql":
        return await _insert_mysql(target.url, table, columns, rows)
    return await asyncio.to_thread(_insert_sqlite, target.sqlite_path, table, columns, rows)


async def _copy_postgres(url: str, table: str, columns: Sequence[str], rows: Rows) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    count = 0
    try:
        for batch in batches(rows, 50_000):
            await conn.copy_records_to_table(table, records=batch, columns=list(columns))
            count += len(batch)
    finally:
        await conn.close()
    return count


async def _insert_mysql(url: str, table: str, columns: Sequence[str], rows: Rows) -> int:
    import aiomysql  # type: ignore[import-untyped]

    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    conn = await aiomysql.connect(**connect_args(url))
    count = 0
    try:
        async with conn.cursor() as cursor:
            for batch in batches(rows):
                await cursor.executemany(sql, batch)  # sent as multi-row INSERTs
                await conn.commit()
                count += len(batch)
    finally:
        conn.close()
    return count


def _insert_sqlite(path: str, table: str, columns: Sequence[str], rows: Rows) -> int:
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    count = 0
    with closing(sqlite3.connect(path, timeout=30)) as conn, conn:
        for batch in batches(rows):
            conn.executemany(sql, [tuple(map(_sqlite_value, row)) for row in batch])
            count += len(batch)
    return count


def _sqlite_value(value: Any) -> Any:
    return sqlite_timestamp(value) if isinstance(value, datetime) else value
