"""Store calls on a bare database driver: the same SQL as our stores, no SQLAlchemy.

Subclasses plug in a driver (asyncpg, aiomysql, aiosqlite, or sqlite3 for the naive pattern)
through four small methods; the store logic, tenant filters and keyset pages are shared here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata

from .common import ATTACHMENT, ITEM, Context, HasId, check_page, naive_utc, page_of, tenant_of
from .sql_text import Queries, Statement, Style

M = TypeVar("M", bound=HasId)
Values = Mapping[str, Any]


class RawStore(ABC):
    """The benchmark's store calls as hand-written SQL on one driver."""

    style: ClassVar[Style]

    def __init__(self, dialect: str, prefix: str) -> None:
        self.queries = Queries(dialect, prefix, self.style)

    # what a driver provides

    @abstractmethod
    async def _column(self, stmt: Statement, values: Values) -> list[Any]:
        """The first column of every row."""

    @abstractmethod
    async def _execute(self, stmt: Statement, values: Values) -> None:
        """Run one statement in autocommit."""

    @abstractmethod
    async def _atomic(self, steps: Sequence[tuple[Statement, Values]]) -> None:
        """Run several statements in one transaction."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connections."""

    def timestamp(self, moment: datetime) -> Any:
        """A ``created_at`` value as the driver binds it."""
        return naive_utc(moment)

    async def _value(self, stmt: Statement, values: Values) -> Any:
        rows = await self._column(stmt, values)
        return rows[0] if rows else None

    # the store calls

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        """Return the thread, or raise ``NotFoundError``."""
        values = {"tenant": tenant_of(context), "id": thread_id}
        data = await self._value(self.queries.load_thread, values)
        if data is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(data)

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        """Insert or update a thread."""
        values = {
            "tenant": tenant_of(context),
            "id": thread.id,
            "created_at": self.timestamp(thread.created_at),
            "data": thread.model_dump_json(exclude={"items"}),
        }
        await self._execute(self.queries.save_thread, values)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        """One keyset page of the tenant's threads."""
        return await self._page(
            self.queries.thread_pages,
            self.queries.thread_cursor,
            {"tenant": tenant_of(context)},
            after,
            limit,
            order,
            ThreadMetadata.model_validate_json,
        )

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        """Delete the thread, its items and its attachments in one transaction."""
        values = {"tenant": tenant_of(context), "id": thread_id}
        await self._atomic([(stmt, values) for stmt in self.queries.delete_thread])

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        """Insert an item (or replace the same id)."""
        values = {
            "tenant": tenant_of(context),
            "thread_id": thread_id,
            "id": item.id,
            "type": item.type,
            "created_at": self.timestamp(item.created_at),
            "data": item.model_dump_json(),
        }
        await self._execute(self.queries.save_item, values)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        """One keyset page of a thread's items."""
        return await self._page(
            self.queries.item_pages,
            self.queries.item_cursor,
            {"tenant": tenant_of(context), "thread_id": thread_id},
            after,
            limit,
            order,
            ITEM.validate_json,
        )

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        """Insert or update attachment metadata."""
        values = {
            "tenant": tenant_of(context),
            "id": attachment.id,
            "thread_id": attachment.thread_id,
            "created_at": self.timestamp(datetime.now(timezone.utc)),
            "data": attachment.model_dump_json(),
        }
        await self._execute(self.queries.save_attachment, values)

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        """Return attachment metadata, or raise ``NotFoundError``."""
        values = {"tenant": tenant_of(context), "id": attachment_id}
        data = await self._value(self.queries.load_attachment, values)
        if data is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return ATTACHMENT.validate_json(data)

    async def _page(
        self,
        pages: Mapping[tuple[str, bool], Statement],
        cursor: Statement,
        scope: dict[str, Any],
        after: str | None,
        limit: int,
        order: str,
        parse: Callable[[str], M],
    ) -> Page[M]:
        check_page(limit, order)
        values = {**scope, "after": after, "limit": limit + 1}
        rows = await self._column(pages[order, after is not None], values)
        if after is not None and not rows and await self._value(cursor, values) is None:
            raise NotFoundError(f"Cursor {after} names nothing in this list")
        return page_of([parse(row) for row in rows], limit)
