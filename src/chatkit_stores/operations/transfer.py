"""``copy``, ``export`` and ``import``: move every tenant's rows, keeping ids, tenants and order.

Rows are read from the source in ``seq`` order, a batch at a time, and inserted in that order,
so the destination's ``seq`` (the tie-breaker for equal ``created_at``) keeps their relative
order. Threads, items and attachment metadata move as stored: ``data`` is copied byte for
byte, ``created_at`` exactly (attachment bytes stay where they are; see docs/operations.md).

Each batch is one transaction that first looks up which of its rows the destination already
holds (by ``tenant, id``, for items ``tenant, thread_id, id``):

- a row that is not there is inserted;
- a row that is there with the same values is skipped, so running a copy again (after an
  interruption, or just twice) inserts only what is missing and duplicates nothing;
- a row that is there with *different* values stops the transfer with
  :class:`TransferConflict` naming table, tenant and id. Nothing is ever overwritten; the rows
  of earlier batches stay (run it again once the conflict is resolved).

A destination without our tables is migrated first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, bindparam, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..sql import dialects
from . import OperationError
from .database import COLUMNS, KEYS, TABLES, Database, Row, blame
from .jsonl import End, ExportWriter, read_export
from .progress import Progress

LOOKUP_CHUNK = 200
"""Rows looked up per statement (at most 600 parameters, under every driver's limit)."""


class TransferConflict(OperationError):
    """The destination holds different data under an id being copied; nothing was overwritten."""


@dataclass
class TransferReport:
    """Rows inserted and rows found already present, per table."""

    inserted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    present: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    migrated: bool = False

    def lines(self, verb: str = "copied") -> list[str]:
        """One line per table: ``threads: 3 copied, 1 already there``."""
        return [
            f"{name}: {self.inserted[name]} {verb}, {self.present[name]} already there"
            for name in TABLES
        ]


ProgressFactory = Callable[[str, "int | None"], Progress]


def describe(table: str, row: Row) -> str:
    """``items tenant='u1' thread_id='thr_1' id='msg_1'``: the key of a row, for messages."""
    parts = [f"{column}={row[column]!r}" for column in KEYS[table]]
    return f"{table} {' '.join(parts)}"


def differences(table: str, stored: Row, incoming: Row) -> list[str]:
    """The columns in which ``stored`` and ``incoming`` differ (``data`` compared as JSON)."""
    changed = [
        column
        for column in COLUMNS[table]
        if column not in KEYS[table] and column != "data" and stored[column] != incoming[column]
    ]
    if not same_json(stored["data"], incoming["data"]):
        changed.append("data")
    return changed


def same_json(a: str, b: str) -> bool:
    """Whether two stored blobs are equal: the same text, or the same JSON value."""
    if a == b:
        return True
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


class Writer:
    """Inserts rows into a database, skipping identical ones and refusing different ones."""

    def __init__(self, db: Database, conn: AsyncConnection) -> None:
        self.db = db
        self.conn = conn
        self.report = TransferReport()
        self._lookups: dict[tuple[str, int], Select[Any]] = {}

    async def is_empty(self, table: str) -> bool:
        """Whether ``table`` holds no rows yet."""
        t = self.db.table(table)
        with blame(self.db.url):
            async with self.conn.begin():
                return (await self.conn.execute(select(t.c.seq).limit(1))).first() is None

    async def write(self, table: str, rows: list[Row], *, unique_into_empty: bool = False) -> None:
        """Insert the rows ``table`` lacks, in order, in one transaction.

        ``unique_into_empty`` skips the lookup: the caller knows the table was empty when it
        started and its rows have unique keys (a database source), so none can be there unless
        someone else writes concurrently, and then the unique constraint stops the insert.
        """
        if not rows:
            return
        with blame(self.db.url):
            async with self.conn.begin():
                stored = {} if unique_into_empty else await self._stored(table, rows)
                new: list[Row] = []
                for row in rows:
                    key = tuple(row[column] for column in KEYS[table])
                    found = stored.get(key)
                    if found is None:
                        new.append(row)
                        stored[key] = row  # a repeated row later in the batch compares to it
                        continue
                    changed = differences(table, found, row)
                    if changed:
                        raise TransferConflict(
                            f"{self.db.label} already holds {describe(table, row)} with "
                            f"different {', '.join(changed)}; stopped without overwriting it"
                        )
                    self.report.present[table] += 1
                if new:
                    await self.conn.execute(insert(self.db.table(table)), new)
        self.report.inserted[table] += len(new)

    async def _stored(self, table: str, rows: list[Row]) -> dict[tuple[Any, ...], Row]:
        keys = KEYS[table]
        found: dict[tuple[Any, ...], Row] = {}
        for start in range(0, len(rows), LOOKUP_CHUNK):
            chunk = rows[start : start + LOOKUP_CHUNK]
            params = {f"{k}_{n}": row[k] for n, row in enumerate(chunk) for k in keys}
            result = await self.conn.execute(self._lookup(table, len(chunk)), params)
            for hit in result.mappings():
                found[tuple(hit[k] for k in keys)] = dict(hit)
        return found

    def _lookup(self, table: str, size: int) -> Select[Any]:
        """``SELECT ... WHERE (key = :key_0 AND ...) OR ...`` for ``size`` rows, built once.

        An OR of key equalities is a range lookup on the unique index on every backend.
        """
        stmt = self._lookups.get((table, size))
        if stmt is None:
            t = self.db.table(table)
            keys = KEYS[table]
            match = or_(
                *(and_(*(t.c[k] == bindparam(f"{k}_{n}") for k in keys)) for n in range(size))
            )
            stmt = select(*(t.c[column] for column in COLUMNS[table])).where(match)
            self._lookups[(table, size)] = stmt
        return stmt


@asynccontextmanager
async def open_writer(db: Database) -> AsyncIterator[Writer]:
    """A :class:`Writer` on one connection of ``db`` in transactional mode."""
    with blame(db.url):
        async with db.engine.connect() as conn:
            level = dialects.TRANSACTION_ISOLATION[db.backend]
            conn = await conn.execution_options(isolation_level=level)
            yield Writer(db, conn)


async def copy(
    source_url: str,
    dest_url: str,
    *,
    prefix: str,
    dest_prefix: str | None = None,
    batch_size: int = 500,
    progress: ProgressFactory | None = None,
) -> TransferReport:
    """Copy every row from ``source_url`` to ``dest_url`` (migrated first when it is empty)."""
    dest_prefix = dest_prefix or prefix
    source = Database.open(source_url, prefix, must_exist=True)
    dest = Database.open(dest_url, dest_prefix)
    try:
        if source.label == dest.label and prefix == dest_prefix:
            raise OperationError("the source and the destination are the same tables")
        await source.require_schema()
        migrated = await dest.ensure_schema()
        async with open_writer(dest) as writer:
            writer.report.migrated = migrated
            for table in TABLES:
                bar = _bar(progress, table, await source.count(table))
                # A table empty at the start needs no lookups (source keys are unique). A copy
                # that stopped half way finds it non-empty and looks every row up.
                fresh = await writer.is_empty(table)
                async with aclosing(source.batches(table, batch_size)) as batches:
                    async for batch in batches:
                        await writer.write(table, batch, unique_into_empty=fresh)
                        bar.advance(len(batch))
                bar.close()
            return writer.report
    finally:
        await source.close()
        await dest.close()


async def export(
    url: str,
    path: str,
    *,
    prefix: str,
    batch_size: int = 500,
    progress: ProgressFactory | None = None,
) -> dict[str, int]:
    """Write every row of the database to the JSON Lines file ``path``; return rows per table."""
    source = Database.open(url, prefix, must_exist=True)
    try:
        await source.require_schema()
        with ExportWriter(path) as out:
            for table in TABLES:
                bar = _bar(progress, table, await source.count(table))
                async with aclosing(source.batches(table, batch_size)) as batches:
                    async for batch in batches:
                        out.write(table, batch)
                        bar.advance(len(batch))
                bar.close()
            out.finish()
            return dict(out.rows)
    finally:
        await source.close()


async def import_(
    path: str,
    url: str,
    *,
    prefix: str,
    batch_size: int = 500,
    progress: ProgressFactory | None = None,
) -> TransferReport:
    """Insert the rows of the export ``path`` into ``url`` (migrated first when it is empty).

    Raises ``OperationError`` after importing everything when the file has no end line or its
    counts do not match (an export cut short).
    """
    rows = read_export(path)
    first = next(rows, None)  # checks the header before anything is migrated
    read = dict.fromkeys(TABLES, 0)
    end: End | None = None
    dest = Database.open(url, prefix)
    try:
        migrated = await dest.ensure_schema()
        async with open_writer(dest) as writer:
            writer.report.migrated = migrated
            bar = _bar(progress, "rows", None)
            pending: dict[str, list[Row]] = {table: [] for table in TABLES}
            for entry in _chain(first, rows):
                if isinstance(entry, End):
                    end = entry  # read_export refuses anything after it
                    continue
                table, row = entry
                read[table] += 1
                pending[table].append(row)
                if len(pending[table]) >= batch_size:
                    await writer.write(table, pending[table])
                    bar.advance(len(pending[table]))
                    pending[table] = []
            for table in TABLES:
                await writer.write(table, pending[table])
                bar.advance(len(pending[table]))
            bar.close()
            report = writer.report
    finally:
        rows.close()
        await dest.close()
    if end is None:
        raise OperationError(
            f"{path} has no end line: the export was cut short; imported the "
            f"{sum(read.values())} rows it holds"
        )
    if end.rows != read:
        raise OperationError(f"{path} holds {read} rows but its end line counts {end.rows}")
    return report


def _chain(
    first: tuple[str, Row] | End | None, rest: Iterable[tuple[str, Row] | End]
) -> Iterable[tuple[str, Row] | End]:
    if first is not None:
        yield first
    yield from rest


def _bar(progress: ProgressFactory | None, label: str, total: int | None) -> Progress:
    if progress is None:
        return Progress(label, total, enabled=False)
    return progress(label, total)
