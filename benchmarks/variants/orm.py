"""(b) A typical hand-written SQLAlchemy ORM store: ``AsyncSession``, mapped classes, one
session per call, select-then-update for saves, the cursor row read before its page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from sqlalchemy import ColumnElement, Select, and_, delete, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped

from chatkit_stores.sql.schema import Tables, make_tables

from .common import ATTACHMENT, ITEM, Context, HasId, check_page, naive_utc, page_of, tenant_of

M = TypeVar("M", bound=HasId)
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
}


class Row:
    """The columns every table has."""

    seq: Mapped[int]
    tenant: Mapped[str]
    id: Mapped[str]
    created_at: Mapped[datetime]
    data: Mapped[str]


def mapped_classes(tables: Tables) -> tuple[Any, Any, Any]:
    """ORM classes on the benchmark's tables (built per store, since the table prefix varies)."""

    class Base(DeclarativeBase):
        pass

    class ThreadRow(Row, Base):
        __table__ = tables.threads

    class ItemRow(Row, Base):
        __table__ = tables.items
        thread_id: Mapped[str]
        type: Mapped[str]

    class AttachmentRow(Row, Base):
        __table__ = tables.attachments
        thread_id: Mapped[str | None]

    return ThreadRow, ItemRow, AttachmentRow


def after_cursor(row_class: Any, cursor: Any, order: str) -> ColumnElement[bool]:
    """Rows strictly after ``cursor`` in ``(created_at, seq)`` order."""
    if order == "asc":
        return or_(
            row_class.created_at > cursor.created_at,
            and_(row_class.created_at == cursor.created_at, row_class.seq > cursor.seq),
        )
    return or_(
        row_class.created_at < cursor.created_at,
        and_(row_class.created_at == cursor.created_at, row_class.seq < cursor.seq),
    )


class OrmStore:
    """The store calls as a SQLAlchemy ORM user would write them."""

    def __init__(self, url: str, prefix: str, pool_size: int) -> None:
        scheme, rest = url.split("://", 1)
        options: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 0}
        if scheme == "sqlite":
            options["connect_args"] = {"timeout": 30}
        self.engine = create_async_engine(f"{ASYNC_DRIVERS[scheme]}://{rest}", **options)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.Thread, self.Item, self.Attachment = mapped_classes(make_tables(prefix))

    async def close(self) -> None:
        """Dispose of the engine."""
        await self.engine.dispose()

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        """Return the thread, or raise ``NotFoundError``."""
        async with self.sessions() as session:
            row = await session.scalar(self._thread(tenant_of(context), thread_id))
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(row.data)

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        """Insert or update a thread."""
        tenant = tenant_of(context)
        data = thread.model_dump_json(exclude={"items"})
        async with self.sessions.begin() as session:
            row = await session.scalar(self._thread(tenant, thread.id))
            if row is None:
                created_at = naive_utc(thread.created_at)
                session.add(
                    self.Thread(tenant=tenant, id=thread.id, created_at=created_at, data=data)
                )
            else:
                row.data = data

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        """One keyset page of the tenant's threads."""
        tenant = tenant_of(context)
        query = select(self.Thread).where(self.Thread.tenant == tenant)
        cursor = None if after is None else self._thread(tenant, after)
        return await self._page(
            self.Thread, query, cursor, limit, order, ThreadMetadata.model_validate_json
        )

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        """Delete the thread, its items and its attachments in one transaction."""
        tenant = tenant_of(context)
        Thread, Item, Attachment = self.Thread, self.Item, self.Attachment
        async with self.sessions.begin() as session:
            await session.execute(
                delete(Item).where(Item.tenant == tenant, Item.thread_id == thread_id)
            )
            await session.execute(
                delete(Attachment).where(
                    Attachment.tenant == tenant, Attachment.thread_id == thread_id
                )
            )
            await session.execute(
                delete(Thread).where(Thread.tenant == tenant, Thread.id == thread_id)
            )

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        """Insert an item."""
        row = self.Item(
            tenant=tenant_of(context),
            thread_id=thread_id,
            id=item.id,
            type=item.type,
            created_at=naive_utc(item.created_at),
            data=item.model_dump_json(),
        )
        async with self.sessions.begin() as session:
            session.add(row)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        """One keyset page of a thread's items."""
        tenant = tenant_of(context)
        Item = self.Item
        in_thread = (Item.tenant == tenant, Item.thread_id == thread_id)
        query = select(Item).where(*in_thread)
        cursor = None if after is None else select(Item).where(*in_thread, Item.id == after)
        return await self._page(Item, query, cursor, limit, order, ITEM.validate_json)

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        """Insert or update attachment metadata."""
        tenant = tenant_of(context)
        data = attachment.model_dump_json()
        async with self.sessions.begin() as session:
            row = await session.scalar(self._attachment(tenant, attachment.id))
            if row is None:
                created_at = datetime.now(timezone.utc).replace(tzinfo=None)
                session.add(
                    self.Attachment(
                        tenant=tenant,
                        id=attachment.id,
                        thread_id=attachment.thread_id,
                        created_at=created_at,
                        data=data,
                    )
                )
            else:
                row.thread_id, row.data = attachment.thread_id, data

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        """Return attachment metadata, or raise ``NotFoundError``."""
        async with self.sessions() as session:
            row = await session.scalar(self._attachment(tenant_of(context), attachment_id))
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return ATTACHMENT.validate_json(row.data)

    def _thread(self, tenant: str, thread_id: str) -> Select[Any]:
        return select(self.Thread).where(self.Thread.tenant == tenant, self.Thread.id == thread_id)

    def _attachment(self, tenant: str, attachment_id: str) -> Select[Any]:
        Attachment = self.Attachment
        return select(Attachment).where(Attachment.tenant == tenant, Attachment.id == attachment_id)

    async def _page(
        self,
        row_class: Any,
        query: Select[Any],
        cursor_query: Select[Any] | None,
        limit: int,
        order: str,
        parse: Callable[[str], M],
    ) -> Page[M]:
        check_page(limit, order)
        columns = [row_class.created_at, row_class.seq]
        query = query.order_by(*(columns if order == "asc" else [c.desc() for c in columns]))
        async with self.sessions() as session:
            if cursor_query is not None:
                cursor = await session.scalar(cursor_query)
                if cursor is None:
                    raise NotFoundError("The cursor names nothing in this list")
                query = query.where(after_cursor(row_class, cursor, order))
            rows = (await session.scalars(query.limit(limit + 1))).all()
            return page_of([parse(row.data) for row in rows], limit)
