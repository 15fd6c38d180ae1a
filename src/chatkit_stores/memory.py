"""An in-memory store: the reference model of the store semantics, kept obviously correct."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Generic, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import BaseModel

from .audit import ATTACHMENT_DELETE, THREAD_DELETE
from .base import StoreBase, StoreOptions, TContext, check_id, make_page, naive_utc
from .telemetry import DB_SYSTEM_NAME, Attributes, operation

if TYPE_CHECKING:
    from typing_extensions import Unpack

M = TypeVar("M", bound=BaseModel)


@dataclass
class _Row(Generic[M]):
    """A stored model and its fixed place in the order: (created_at, insertion number)."""

    place: tuple[datetime, int]
    model: M
    version: int = 0  # bumped by every save (threads: optimistic concurrency)


class MemoryStore(StoreBase[TContext]):
    """Keeps everything in dicts; same semantics as the SQL stores, no I/O, nothing persisted."""

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        super().__init__(**options)
        self._threads: dict[tuple[str, str], _Row[ThreadMetadata]] = {}
        self._items: dict[tuple[str, str, str], _Row[ThreadItem]] = {}
        self._attachments: dict[tuple[str, str], Attachment] = {}
        self._attachment_created: dict[tuple[str, str], datetime] = {}
        self._counter = itertools.count()

    # threads

    async def _swap_thread_row(
        self, tenant: str, thread: ThreadMetadata, data: str, version: int
    ) -> bool:
        row = self._threads.get((tenant, thread.id))
        if row is None or row.version != version:
            return False
        self._upsert(self._threads, (tenant, thread.id), ThreadMetadata.model_validate_json(data))
        return True

    async def _stored_thread_row(self, tenant: str, thread_id: str) -> tuple[str, int] | None:
        row = self._threads.get((tenant, thread_id))
        return None if row is None else (row.model.model_dump_json(), row.version)

    async def _upsert_thread_row(self, tenant: str, thread: ThreadMetadata, data: str) -> None:
        model = ThreadMetadata.model_validate_json(data)
        self._upsert(self._threads, (tenant, thread.id), model)

    @operation("threads")
    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """Return a copy of the thread, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        row = self._threads.get((tenant, thread_id))
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        thread = row.model.model_copy(deep=True)
        self.loaded_threads.remember(thread, tenant, row.version, row.model.model_dump_json())
        return thread

    @operation("threads")
    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        """Return one page of the tenant's threads by creation time."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        rows = [row for (t, _), row in self._threads.items() if t == tenant]
        return _page(rows, after, size, order)

    @operation("threads", audit=THREAD_DELETE)
    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Remove the thread, its items and its attachments' metadata."""
        tenant = self.tenant_of(context)
        self._threads.pop((tenant, thread_id), None)
        for item_key in [k for k in self._items if k[:2] == (tenant, thread_id)]:
            del self._items[item_key]
        doomed = [
            key
            for key, attachment in self._attachments.items()
            if key[0] == tenant and attachment.thread_id == thread_id
        ]
        for key in doomed:
            self._forget(key)
        await self.forget_attachments(tenant, [attachment_id for _, attachment_id in doomed])

    # items

    @operation("items")
    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Add an item unless one with its id is stored (a retry never reverts a later save)."""
        tenant = self.tenant_of(context)
        key = (tenant, check_id(thread_id, "thread id"), check_id(item.id, "item id"))
        if key not in self._items:
            self._upsert(self._items, key, item)

    @operation("items")
    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or replace an item; an existing item keeps its place."""
        tenant = self.tenant_of(context)
        key = (tenant, check_id(thread_id, "thread id"), check_id(item.id, "item id"))
        self._upsert(self._items, key, item)

    @operation("items")
    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """Return a copy of the item, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        row = self._items.get((tenant, thread_id, item_id))
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return await self.present_item(tenant, row.model.model_copy(deep=True))

    @operation("items")
    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        """Return one page of a thread's items by creation time."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        rows = [row for key, row in self._items.items() if key[:2] == (tenant, thread_id)]
        page = _page(rows, after, size, order)
        page.data = [await self.present_item(tenant, item) for item in page.data]
        return page

    @operation("items")
    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        """Remove one item; a missing item is a no-op."""
        self._items.pop((self.tenant_of(context), thread_id, item_id), None)

    # attachments

    @operation("attachments")
    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Insert or replace attachment metadata."""
        key = (self.tenant_of(context), check_id(attachment.id, "attachment id"))
        if attachment.thread_id is not None:
            check_id(attachment.thread_id, "thread id")
        self._attachments[key] = attachment.model_copy(deep=True)
        self._attachment_created.setdefault(key, naive_utc(datetime.now(timezone.utc)))

    @operation("attachments")
    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """Return a copy of the attachment metadata, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        attachment = self._attachments.get((tenant, attachment_id))
        if attachment is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return await self.present_attachment(tenant, attachment.model_copy(deep=True))

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Remove attachment metadata, then its bytes; a missing attachment is a no-op."""
        tenant = self.tenant_of(context)
        if self._forget((tenant, attachment_id)):
            await self.forget_attachments(tenant, [attachment_id])

    @operation("attachments")
    async def orphaned_attachments(
        self, created_before: datetime, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of attachments saved before the cutoff and never put in a thread."""
        orphans = [
            (self._attachment_created[key], key)
            for key in self._attachments
            if self._is_orphan(key, created_before)
        ]
        return [key for _, key in sorted(orphans)[:limit]]

    @operation("attachments")
    async def update_attachment(
        self, tenant: str, attachment_id: str, change: Callable[[Attachment], Attachment]
    ) -> Attachment | None:
        """Replace the stored attachment by ``change(stored)``; None if it is not stored."""
        stored = self._attachments.get((tenant, attachment_id))
        if stored is None:
            return None
        changed = change(stored.model_copy(deep=True))
        self._attachments[(tenant, attachment_id)] = changed.model_copy(deep=True)
        return changed

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_orphan(
        self, attachment_id: str, context: TContext, created_before: datetime
    ) -> bool:
        """Delete the metadata if it is still in no thread and saved before the cutoff."""
        key = (self.tenant_of(context), attachment_id)
        return self._is_orphan(key, created_before) and self._forget(key)

    @operation("attachments")
    async def attachment_keys(
        self, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of every tenant's attachments, in that order, after ``after``."""
        return sorted(key for key in self._attachments if after is None or key > after)[:limit]

    def _is_orphan(self, key: tuple[str, str], created_before: datetime) -> bool:
        attachment = self._attachments.get(key)
        return (
            attachment is not None
            and attachment.thread_id is None
            and self._attachment_created[key] < naive_utc(created_before)
        )

    def _forget(self, key: tuple[str, str]) -> bool:
        """Drop an attachment's metadata; whether there was any."""
        self._attachment_created.pop(key, None)
        return self._attachments.pop(key, None) is not None

    def telemetry_attributes(self) -> Attributes:
        """``db.system.name`` is ``memory``."""
        return {DB_SYSTEM_NAME: "memory"}

    def _upsert(self, table: dict[K, _Row[M]], key: K, model: M) -> None:
        existing = table.get(key)
        place = existing.place if existing else (naive_utc(model.created_at), next(self._counter))  # type: ignore[attr-defined]
        version = existing.version + 1 if existing else 0
        table[key] = _Row(place, model.model_copy(deep=True), version)


K = TypeVar("K", bound=tuple[str, ...])


def _page(rows: list[_Row[M]], after: str | None, limit: int, order: str) -> Page[M]:
    rows = sorted(rows, key=lambda row: row.place, reverse=order == "desc")
    if after is not None:
        ids = [row.model.id for row in rows]  # type: ignore[attr-defined]
        if after not in ids:
            raise NotFoundError(f"Cursor {after} names nothing in this list")
        rows = rows[ids.index(after) + 1 :]
    return make_page([row.model.model_copy(deep=True) for row in rows[: limit + 1]], limit)
