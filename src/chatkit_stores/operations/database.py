"""One database as the operations see it: an engine, the tables, and rows streamed by ``seq``.

Every operation reads rows in ``seq`` order (the insertion order that breaks ``created_at``
ties) with keyset pagination on the primary key, so memory stays bounded by one batch however
large a table is. Errors from a database carry its URL (:func:`blame`) so the command can name
the host that failed when two databases are involved.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..sql import dialects
from ..sql.schema import Tables, make_tables
from . import OperationError

TABLES = ("threads", "items", "attachments")
"""The tables in the order operations walk them."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "threads": ("tenant", "id", "created_at", "data"),
    "items": ("tenant", "thread_id", "id", "type", "created_at", "data"),
    "attachments": ("tenant", "id", "thread_id", "created_at", "data"),
}
"""The columns an operation moves, per table (``seq`` is the destination's to assign)."""

KEYS: dict[str, tuple[str, ...]] = {
    "threads": ("tenant", "id"),
    "items": ("tenant", "thread_id", "id"),
    "attachments": ("tenant", "id"),
}
"""The logical key of each table (its unique constraint)."""

Row = dict[str, Any]
"""One row: the ``COLUMNS`` of its table, ``created_at`` a naive UTC datetime."""

URL_ATTRIBUTE = "chatkit_stores_url"
"""Where :func:`blame` records the URL of the database that raised an error."""


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database URL"


@contextmanager
def blame(url: str) -> Iterator[None]:
    """Tag connection, database and file errors raised inside with ``url`` (first tag wins)."""
    try:
        yield
    except (OSError, SQLAlchemyError) as error:
        if getattr(error, URL_ATTRIBUTE, None) is None:
            setattr(error, URL_ATTRIBUTE, url)
        raise


def check_sqlite_file(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist (connecting would create an empty one)."""
    parsed = dialects.async_url(url)
    if dialects.backend_of(parsed) != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise OperationError(f"no SQLite database at {database} (nothing was created)")


async def require_tables(store: Any) -> None:
    """Raise ``OperationError`` unless a SQL store's tables exist (SQLite would make them)."""
    from ..migrations import current

    if await current(store.engine, prefix=store.table_prefix) is None:
        url = store.engine.url.set(drivername=store.engine.url.get_backend_name())
        raise OperationError(
            f"{safe_url(url)} has no chatkit-stores tables with prefix "
            f"{store.table_prefix!r} (wrong URL or --table-prefix?)"
        )


@dataclass
class Database:
    """An engine of our own on one database, and the tables with one prefix."""

    url: str
    prefix: str
    engine: AsyncEngine
    tables: Tables

    @classmethod
    def open(cls, url: str, prefix: str, *, must_exist: bool = False) -> Database:
        """Make an engine for ``url`` (nothing connects yet); ``must_exist`` checks SQLite files."""
        if must_exist:
            check_sqlite_file(url)
        parsed = dialects.async_url(url)
        tables = make_tables(prefix)
        engine = dialects.create_engine(parsed, dialects.engine_options(parsed))
        return cls(url, prefix, engine, tables)

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return dialects.backend_of(self.engine.url)

    @property
    def label(self) -> str:
        """The URL without its password, for messages."""
        return safe_url(self.url)

    def table(self, name: str) -> Table:
        """The table called ``name`` (``threads``, ``items`` or ``attachments``)."""
        table: Table = getattr(self.tables, name)
        return table

    async def close(self) -> None:
        """Close the engine's connections."""
        await self.engine.dispose()

    async def revision(self) -> str | None:
        """The chatkit-stores revision of this prefix, or None when its tables are not there."""
        from ..migrations import current

        with blame(self.url):
            return await current(self.engine, prefix=self.prefix)

    async def require_schema(self) -> None:
        """Raise ``OperationError`` unless the tables exist at the newest revision."""
        from ..migrations import head

        revision = await self.revision()
        if revision is None:
            raise OperationError(
                f"{self.label} has no chatkit-stores tables with prefix {self.prefix!r} "
                "(wrong URL or --table-prefix?)"
            )
        if revision != head():
            raise OperationError(
                f"{self.label} is at revision {revision}, not {head()}: "
                "run `chatkit-stores migrate` on it first"
            )

    async def ensure_schema(self) -> bool:
        """Create the tables when the database has none of ours; True if it did."""
        from ..migrations import migrate

        if await self.revision() is None:
            with blame(self.url):
                await migrate(self.engine, prefix=self.prefix)
            return True
        await self.require_schema()
        return False

    async def count(self, name: str) -> int:
        """How many rows ``name`` holds."""
        with blame(self.url):
            async with self.engine.connect() as conn:
                stmt = select(func.count()).select_from(self.table(name))
                return int((await conn.execute(stmt)).scalar_one())

    async def batches(
        self, name: str, size: int, conn: AsyncConnection | None = None
    ) -> AsyncGenerator[list[Row], None]:
        """Yield the rows of ``name`` in ``seq`` order, ``size`` at a time."""
        with blame(self.url):
            if conn is not None:
                async for batch in rows_by_seq(conn, self.table(name), name, size):
                    yield batch
                return
            async with self.engine.connect() as own:
                async for batch in rows_by_seq(own, self.table(name), name, size):
                    yield batch


async def rows_by_seq(
    conn: AsyncConnection, table: Table, name: str, size: int
) -> AsyncGenerator[list[Row], None]:
    """Yield ``table``'s rows in ``seq`` order in batches of ``size`` (keyset on ``seq``)."""
    if size < 1:
        raise ValueError(f"batch size must be positive, got {size}")
    columns = [table.c[column] for column in COLUMNS[name]]
    last: int | None = None
    while True:
        stmt = select(table.c.seq, *columns).order_by(table.c.seq).limit(size)
        if last is not None:
            stmt = stmt.where(table.c.seq > last)
        rows = (await conn.execute(stmt)).mappings().all()
        if not rows:
            return
        last = rows[-1]["seq"]
        yield [{column: row[column] for column in COLUMNS[name]} for row in rows]
        if len(rows) < size:
            return
