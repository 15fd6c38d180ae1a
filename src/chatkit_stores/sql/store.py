"""One ChatKit ``Store`` for SQLite, PostgreSQL and MySQL/MariaDB on SQLAlchemy async Core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy import exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ..audit import ATTACHMENT_DELETE, THREAD_DELETE
from ..base import (
    StoreBase,
    StoreOptions,
    TContext,
    check_id,
    is_key,
    make_page,
    naive_utc,
)
from ..blobs import ATTACHMENTS, ITEMS, PLAIN, THREADS, Blobs
from ..telemetry import Attributes, operation, sql_attributes
from ..tenancy import TENANT_SETTING
from . import dialects
from .dialects import key_text
from .driver import Driver, Row, run
from .greenlets import release_idle
from .schema import DEFAULT_TABLE_PREFIX, make_tables
from .statements import Kind, Order, Statement, build_statements
from .turns import turns_for

if TYPE_CHECKING:
    from typing_extensions import Unpack

M = TypeVar("M")

_ITEM = TypeAdapter[ThreadItem](ThreadItem)
_ATTACHMENT = TypeAdapter[Attachment](Attachment)
_MISSING_TABLE = ("does not exist", "doesn't exist", "no such table")
_MISSING_COLUMN = ("does not exist", "Unknown column", "no such column")


PARSE_SLICE_S = 0.002
"""Longest stretch of parsing a page before letting other tasks run: a page of big items is
milliseconds of pydantic work, which would otherwise stall the event loop that long (one big
item alone cannot be split). Shorter slices cost throughput under load, as each yield resumes
validation with colder caches; the figures are in docs/benchmarks.md (event-loop stalls)."""


async def _parse_yielding(rows: list[Row], parse: Callable[..., M]) -> list[M]:
    """``parse(*row)`` for each row, yielding to the event loop every ``PARSE_SLICE_S`` s."""
    parsed = []
    until = time.perf_counter() + PARSE_SLICE_S
    for row in rows:
        parsed.append(parse(*row))
        if time.perf_counter() > until:
            await asyncio.sleep(0)
            until = time.perf_counter() + PARSE_SLICE_S
    return parsed


def _with_tenant(
    tenant: str | None, work: Callable[[Driver], Awaitable[M]]
) -> Callable[[Driver], Awaitable[M]]:
    """``work`` preceded by telling PostgreSQL the tenant, for its Row-Level Security policies."""

    async def scoped(db: Driver) -> M:
        await db.set_setting(TENANT_SETTING, tenant or "")
        return await work(db)

    return scoped


class SchemaMissingError(RuntimeError):
    """The chatkit-stores tables are not in the database yet."""


class SQLStore(StoreBase[TContext]):
    """A ChatKit store on SQLAlchemy async Core; one implementation for all SQL backends.

    Build it from a URL (``SQLStore.from_url``) or with ``engine=`` an ``AsyncEngine`` you own
    (then ``close()`` leaves it open). Every method is atomic: one statement, or one
    transaction when it needs several.
    """

    required_backend: ClassVar[str | None] = None
    """The backend a subclass's URL must name (``None``: any, chosen by the URL)."""
    auto_create_schema: ClassVar[bool] = False

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: AsyncEngine | None = None,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        engine_options: dict[str, Any] | None = None,
        row_level_security: bool = False,
        blobs: Blobs = PLAIN,
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(**options)
        if (url is None) == (engine is None):
            raise TypeError(f"{type(self).__name__} needs exactly one of a URL or engine=")
        if engine is None:
            assert url is not None
            parsed = dialects.async_url(self._normalize(url))
            self._check_backend(dialects.backend_of(parsed))
            engine = dialects.create_engine(parsed, dialects.engine_options(parsed, engine_options))
            self._owns_engine = True
        else:
            self._check_backend(dialects.backend_of(engine.url))
            self._owns_engine = False
        self.engine = engine
        self.backend = dialects.backend_of(engine.url)
        """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB too): what the statements are for."""
        self.table_prefix = table_prefix
        self.tables = make_tables(table_prefix)
        if row_level_security and self.backend != "postgresql":
            raise ValueError("row_level_security needs PostgreSQL")
        self.row_level_security = row_level_security
        if blobs is not PLAIN:
            if options.get("encryption") is not None:
                raise TypeError("give encryption= or blobs=, not both")
            self.blobs = blobs
        self.statements = build_statements(self.tables, self.backend, engine.dialect)
        """Every statement, compiled once: ``self.statements.save_item``, ``.page(...)``."""
        self._schema_ready = not self.auto_create_schema
        self._schema_lock: asyncio.Lock | None = None
        # Calls wait for a connection in arrival order; on a single shared connection (an
        # in-memory SQLite database) one at a time, or they would run in each other's
        # transactions.
        self._turns = turns_for(engine.pool)

    @classmethod
    def from_url(cls, url: str | URL, **options: Any) -> SQLStore[Any]:
        """Return the store for the URL's scheme: SQLite, PostgreSQL or MySQL/MariaDB."""
        backend = dialects.backend_of(dialects.async_url(url))
        store_class: dict[str, type[SQLStore[Any]]] = {
            "sqlite": SQLiteStore,
            "postgresql": PostgresStore,
            "mysql": MySQLStore,
        }
        return store_class[backend](url, **options)

    async def create_schema(self) -> None:
        """Create or upgrade the tables with the shipped migrations (idempotent)."""
        from ..migrations import migrate

        await migrate(self.engine, prefix=self.table_prefix)
        self._schema_ready = True

    async def close(self) -> None:
        """Close the connection pool (unless the engine was passed in by the caller)."""
        if self._owns_engine:
            await self.engine.dispose()
        release_idle()  # this thread's idle greenlets; later calls make new ones

    async def __aenter__(self) -> SQLStore[TContext]:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def telemetry_attributes(self) -> Attributes:
        """``db.system.name``, ``db.namespace`` and ``server.*`` of the engine."""
        return sql_attributes(self.engine)

    def collection_name(self, collection: str) -> str:
        """The table behind ``threads``, ``items`` or ``attachments`` (with the table prefix)."""
        return f"{self.table_prefix}{collection}"

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}({url!r}, table_prefix={self.table_prefix!r})"

    # threads

    async def _swap_thread_row(
        self, tenant: str, thread: ThreadMetadata, data: str, version: int
    ) -> bool:
        blob = self.blobs.seal(data, THREADS, tenant, thread.id)
        values = {"tenant": tenant, "id": thread.id, "data": blob, "version": version}
        return await self._execute(self.statements.swap_thread, **values) == 1

    async def _stored_thread_row(self, tenant: str, thread_id: str) -> tuple[str, int] | None:
        rows = await self._fetch(self.statements.load_thread, tenant=tenant, id=thread_id)
        if not rows:
            return None
        return self.blobs.open(rows[0][0], THREADS, tenant, thread_id), rows[0][1]

    async def _upsert_thread_row(self, tenant: str, thread: ThreadMetadata, data: str) -> None:
        blob = self.blobs.seal(data, THREADS, tenant, thread.id)
        values = {"tenant": tenant, "id": thread.id, "created_at": naive_utc(thread.created_at)}
        await self._execute(self.statements.save_thread, **values, data=blob)

    @operation("threads")
    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """Return the thread, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        rows = (
            await self._fetch(self.statements.load_thread, tenant=tenant, id=thread_id)
            if is_key(thread_id)
            else []
        )
        if not rows:
            raise NotFoundError(f"Thread {thread_id} not found")
        blob, version = rows[0]
        data = self.blobs.open(blob, THREADS, tenant, thread_id)
        thread = ThreadMetadata.model_validate_json(data)
        self.loaded_threads.remember(thread, tenant, version, data)
        return thread

    @operation("threads")
    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        """Return one page of the tenant's threads by creation time (keyset pagination)."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)

        def thread_of_row(blob: str, id_: str | bytes) -> ThreadMetadata:
            json = self.blobs.open(blob, THREADS, tenant, key_text(id_))
            return ThreadMetadata.model_validate_json(json)

        return await self._page("thread", {"tenant": tenant}, after, size, order, thread_of_row)

    @operation("threads", audit=THREAD_DELETE)
    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete the thread, its items and its attachments' metadata in one transaction."""
        await self._delete_thread(self.tenant_of(context), thread_id, None)

    @operation("threads", audit=THREAD_DELETE)
    async def delete_inactive_thread(
        self, thread_id: str, context: TContext, inactive_before: datetime
    ) -> bool:
        """Delete the thread as ``delete_thread`` does, only if it and its newest item were
        created before ``inactive_before`` (checked by the deleting statement); whether it was.
        """
        return await self._delete_thread(self.tenant_of(context), thread_id, inactive_before)

    async def _delete_thread(
        self, tenant: str, thread_id: str, inactive_before: datetime | None
    ) -> bool:
        if not is_key(thread_id):
            return False
        of_thread = {"tenant": tenant, "thread_id": thread_id}
        thread = {"tenant": tenant, "id": thread_id}

        async def delete(db: Driver) -> list[str] | None:
            if inactive_before is not None:
                # First, so that a thread that became active meanwhile is left whole.
                values = {**thread, "before": naive_utc(inactive_before)}
                if not await db.execute(self.statements.delete_inactive_thread, values):
                    return None
            await db.execute(self.statements.delete_thread_items, of_thread)
            ids = []
            if self.attachment_store is not None:
                rows = await db.fetch(self.statements.thread_attachment_ids, of_thread)
                ids = [key_text(row[0]) for row in rows]
            await db.execute(self.statements.delete_thread_attachments, of_thread)
            if inactive_before is None:
                await db.execute(self.statements.delete_thread, thread)
            return ids

        attachment_ids = await self._run(tenant, delete, atomic=True)
        if attachment_ids is None:
            return False
        await self.forget_attachments(tenant, attachment_ids)
        return True

    # items

    @operation("items")
    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Add an item unless one with its id is stored (a retry never reverts a later save)."""
        await self._write_item(self.statements.insert_item, thread_id, item, context)

    @operation("items")
    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or replace an item; an existing item keeps its place."""
        await self._write_item(self.statements.save_item, thread_id, item, context)

    async def _write_item(
        self, statement: Statement, thread_id: str, item: ThreadItem, context: TContext
    ) -> None:
        tenant = self.tenant_of(context)
        thread_id = check_id(thread_id, "thread id")
        item_id = check_id(item.id, "item id")
        await self._execute(
            statement,
            tenant=tenant,
            thread_id=thread_id,
            id=item_id,
            type=item.type,
            created_at=naive_utc(item.created_at),
            data=self.blobs.seal(item.model_dump_json(), ITEMS, tenant, thread_id, item_id),
        )

    @operation("items")
    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """Return the item, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        key = {"tenant": tenant, "thread_id": thread_id, "id": item_id}
        valid = is_key(thread_id) and is_key(item_id)  # ids that cannot exist: no query
        data = await self._scalar(self.statements.load_item, **key) if valid else None
        if data is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        item = _ITEM.validate_json(self.blobs.open(data, ITEMS, tenant, thread_id, item_id))
        return await self.present_item(tenant, item)

    @operation("items")
    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        """Return one page of a thread's items by creation time (keyset pagination)."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        if not is_key(thread_id):
            return await self._page_of_nothing(after)
        scope = {"tenant": tenant, "thread_id": thread_id}

        def item_of_row(blob: str, id_: str | bytes) -> ThreadItem:
            json = self.blobs.open(blob, ITEMS, tenant, thread_id, key_text(id_))
            return _ITEM.validate_json(json)

        page = await self._page("item", scope, after, size, order, item_of_row)
        if self.attachment_store is not None:
            page.data = [await self.present_item(tenant, item) for item in page.data]
        return page

    @operation("items")
    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        """Delete one item; a missing item is a no-op."""
        tenant = self.tenant_of(context)
        if is_key(thread_id) and is_key(item_id):
            key = {"tenant": tenant, "thread_id": thread_id, "id": item_id}
            await self._execute(self.statements.delete_item, **key)

    # attachments

    @operation("attachments")
    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Insert or replace attachment metadata (ChatKit re-saves it to set ``thread_id``)."""
        thread_id = attachment.thread_id
        tenant = self.tenant_of(context)
        attachment_id = check_id(attachment.id, "attachment id")
        await self._execute(
            self.statements.save_attachment,
            tenant=tenant,
            id=attachment_id,
            thread_id=None if thread_id is None else check_id(thread_id, "thread id"),
            created_at=naive_utc(datetime.now(timezone.utc)),
            data=self.blobs.seal(attachment.model_dump_json(), ATTACHMENTS, tenant, attachment_id),
        )

    @operation("attachments")
    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """Return the attachment metadata, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        key = {"tenant": tenant, "id": attachment_id}
        valid = is_key(attachment_id)  # an id that cannot exist: no query
        data = await self._scalar(self.statements.load_attachment, **key) if valid else None
        if data is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        json = self.blobs.open(data, ATTACHMENTS, tenant, attachment_id)
        return await self.present_attachment(tenant, _ATTACHMENT.validate_json(json))

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Delete attachment metadata, then its bytes; a missing attachment is a no-op."""
        tenant = self.tenant_of(context)
        values = {"tenant": tenant, "id": attachment_id}
        if is_key(attachment_id) and await self._execute(
            self.statements.delete_attachment, **values
        ):
            await self.forget_attachments(tenant, [attachment_id])

    @operation("attachments")
    async def orphaned_attachments(
        self, created_before: datetime, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of attachments saved before the cutoff and never put in a thread."""
        values = {"tenant": None, "before": naive_utc(created_before), "limit": limit}
        rows = await self._fetch(self.statements.orphaned_attachments, **values)  # every tenant's
        return [(key_text(tenant), key_text(id_)) for tenant, id_ in rows]

    @operation("attachments")
    async def update_attachment(
        self, tenant: str, attachment_id: str, change: Callable[[Attachment], Attachment]
    ) -> Attachment | None:
        """Replace the stored attachment by ``change(stored)`` in one transaction (row locked)."""
        key = {"tenant": tenant, "id": attachment_id}
        if not is_key(attachment_id):
            return None

        async def update(db: Driver) -> Attachment | None:
            rows = await db.fetch(self.statements.lock_attachment, key)
            if not rows:
                return None
            row = (ATTACHMENTS, tenant, attachment_id)
            changed = change(_ATTACHMENT.validate_json(self.blobs.open(rows[0][0], *row)))
            data = self.blobs.seal(changed.model_dump_json(), *row)
            values = {**key, "thread_id": changed.thread_id, "data": data}
            await db.execute(self.statements.update_attachment, values)
            return changed

        return await self._run(tenant, update, atomic=True)

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_orphan(
        self, attachment_id: str, context: TContext, created_before: datetime
    ) -> bool:
        """Delete the metadata if it is still in no thread and saved before the cutoff."""
        tenant = self.tenant_of(context)
        values = {"tenant": tenant, "id": attachment_id, "before": naive_utc(created_before)}
        return (
            is_key(attachment_id)
            and await self._execute(self.statements.delete_orphan, **values) == 1
        )

    @operation("attachments")
    async def attachment_keys(
        self, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of every tenant's attachments, in that order, after ``after``."""
        after_tenant, after_id = after or ("", "")
        values = {"after_tenant": after_tenant, "after_id": after_id, "limit": limit}
        rows = await self._fetch(self.statements.attachment_keys, tenant=None, **values)
        return [(key_text(tenant), key_text(id_)) for tenant, id_ in rows]

    # machinery

    async def _run(
        self, tenant: str | None, work: Callable[[Driver], Awaitable[M]], *, atomic: bool = False
    ) -> M:
        """Run ``work`` on a pooled driver connection for ``tenant`` (``atomic``: a transaction).

        On an engine this store made, connections autocommit: a single statement is one round
        trip. Statements were compiled once (``self.statements``) and run on the driver directly.
        With ``row_level_security`` every call is a transaction that first tells PostgreSQL
        the tenant (three more round trips). ``tenant`` None is every tenant's (with RLS, it
        needs a BYPASSRLS role).
        """
        if not self._schema_ready:
            await self._create_schema_once()
        if self.row_level_security:
            atomic, work = True, _with_tenant(tenant, work)
        try:
            if self._turns is None:
                return await run(self.engine, self.backend, work, atomic=atomic)
            async with self._turns.turn():
                return await run(self.engine, self.backend, work, atomic=atomic)
        except exc.DBAPIError as error:
            self._raise_if_schema_missing(error)
            raise

    async def _execute(self, statement: Statement, **values: Any) -> int:
        """Run one statement of ``values["tenant"]``; return how many rows it changed."""
        return await self._run(values["tenant"], lambda db: db.execute(statement, values))

    async def _fetch(self, statement: Statement, **values: Any) -> list[Row]:
        """Run one query of ``values["tenant"]``; return its rows."""
        return await self._run(values["tenant"], lambda db: db.fetch(statement, values))

    def _raise_if_schema_missing(self, error: exc.DBAPIError) -> None:
        message = str(error.orig)
        database = self.engine.url.database
        if "version" in message and any(text in message for text in _MISSING_COLUMN):
            raise SchemaMissingError(  # tables from before migration 0002
                f"The chatkit-stores tables in {database!r} are older than this version of "
                "the library. Run `chatkit-stores migrate URL` first."
            ) from error
        if self.table_prefix in message and any(text in message for text in _MISSING_TABLE):
            raise SchemaMissingError(
                f"The chatkit-stores tables are missing in {database!r}. "
                "Run `chatkit-stores migrate URL` or `await store.create_schema()` first."
            ) from error

    async def _create_schema_once(self) -> None:
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        async with self._schema_lock:
            if not self._schema_ready:
                await self.create_schema()

    async def _scalar(self, statement: Statement, **values: Any) -> Any:
        """Run a one-value query; its value, or None without a row."""
        rows = await self._fetch(statement, **values)
        return rows[0][0] if rows else None

    async def _page(
        self,
        kind: Kind,
        scope: dict[str, Any],
        after: str | None,
        limit: int,
        order: str,
        parse: Callable[..., M],
    ) -> Page[M]:
        """Read ``limit + 1`` rows after the cursor in one query (keyset on created_at, seq).

        The cursor row is looked up inside the same statement. Only when a page with a cursor
        comes back empty is a second query needed, to tell "nothing after it" from "no such
        cursor".
        """
        if after is not None and not is_key(after):
            raise NotFoundError(f"Cursor {after!r:.80} names nothing in this list")
        direction: Order = "asc" if order == "asc" else "desc"  # checked by page_size()
        page = self.statements.page(kind, direction, after=after is not None)
        values = {**scope, "after": after, "limit": limit + 1}

        async def read(db: Driver) -> tuple[list[Row], bool]:
            rows = await db.fetch(page, values)
            if after is None or rows:
                return rows, True
            return rows, bool(await db.fetch(self.statements.cursor(kind), {**scope, "id": after}))

        rows, cursor_found = await self._run(scope["tenant"], read)
        if not cursor_found:
            raise NotFoundError(f"Cursor {after} names nothing in this list")
        parsed = await _parse_yielding(rows[:limit], parse)  # the extra row only says "more"
        return make_page(parsed, limit, more=len(rows) > limit)

    async def _page_of_nothing(self, after: str | None) -> Page[Any]:
        if after is not None:
            raise NotFoundError(f"Cursor {after!r:.80} names nothing in this list")
        return Page()

    def _normalize(self, url: str | URL) -> str | URL:
        return url

    def _check_backend(self, backend: str) -> None:
        required = self.required_backend
        if required is not None and backend != required:
            raise ValueError(f"{type(self).__name__} needs a {required} URL, got {backend}")


class SQLiteStore(SQLStore[TContext]):
    """A store in a SQLite file (WAL mode); creates its tables on first use."""

    required_backend = "sqlite"
    auto_create_schema = True

    def __init__(self, path: str | Path | URL | None = None, **options: Any) -> None:
        super().__init__(path if not isinstance(path, Path) else str(path), **options)

    def _normalize(self, url: str | URL) -> str | URL:
        if isinstance(url, URL) or "://" in url:
            return url
        if url.startswith("file:"):  # an SQLite URI filename
            return f"sqlite+aiosqlite:///{url}{'&' if '?' in url else '?'}uri=true"
        return f"sqlite+aiosqlite:///{url}"


class PostgresStore(SQLStore[TContext]):
    """A store in PostgreSQL through asyncpg; run ``chatkit-stores migrate`` first."""

    required_backend = "postgresql"


class MySQLStore(SQLStore[TContext]):
    """A store in MySQL or MariaDB through aiomysql; run ``chatkit-stores migrate`` first."""

    required_backend = "mysql"
