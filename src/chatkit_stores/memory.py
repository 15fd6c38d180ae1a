"""An in-memory store: the reference model of the store semantics, kept obviously correct.

With ``encryption=`` it keeps, for each thread, item and attachment, the envelope of its JSON
(``blobs``, bound to its row as the SQL stores bind theirs) instead of the model; what it keeps
in clear beside it is what its lists are ordered and selected by (docs/encryption.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Generic, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import BaseModel, TypeAdapter

from .audit import ATTACHMENT_DELETE, THREAD_DELETE
from .base import StoreBase, StoreOptions, TContext, check_id, make_page, naive_utc
from .blobs import ATTACHMENTS, ITEMS, PLAIN, THREADS
from .telemetry import DB_SYSTEM_NAME, Attributes, operation

if TYPE_CHECKING:
    from typing_extensions import Unpack

M = TypeVar("M", bound=BaseModel)
_THREAD = TypeAdapter[ThreadMetadata](ThreadMetadata)
_ITEM = TypeAdapter[ThreadItem](ThreadItem)
_ATTACHMENT = TypeAdapter[Attachment](Attachment)


class _Kept(Generic[M]):
    """A row's model; with encryption=, the envelope of its JSON."""

    kept: M | str

    @property
    def model(self) -> M:
        """The kept model of a store without encryption (the reference of the stateful test)."""
        if isinstance(self.kept, str):
            raise TypeError("this row is sealed: read it through the store")
        return self.kept


@dataclass
class _Row(_Kept[M]):
    """A kept model and its fixed place in the order: (created_at, insertion number)."""

    place: tuple[datetime, int]
    kept: M | str
    version: int = 0  # bumped by every save (threads: optimistic concurrency)


@dataclass
class _AttachmentRow(_Kept[Attachment]):
    """Attachment metadata, and in clear what deletes and sweeps select it by."""

    kept: Attachment | str
    thread_id: str | None
    created: datetime  # when it was first saved (the orphan sweep's cutoff)


class MemoryStore(StoreBase[TContext]):
    """Keeps everything in dicts; same semantics as the SQL stores, no I/O, nothing persisted."""

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        super().__init__(**options)
        self._threads: dict[tuple[str, str], _Row[ThreadMetadata]] = {}
        self._items: dict[tuple[str, str, str], _Row[ThreadItem]] = {}
        self._attachments: dict[tuple[str, str], _AttachmentRow] = {}
        self._counter = itertools.count()

    # threads

    async def _swap_thread_row(
        self, tenant: str, thread: ThreadMetadata, data: str, version: int
    ) -> bool:
        row = self._threads.get((tenant, thread.id))
        if row is None or row.version != version:
            return False
        await self._upsert_thread_row(tenant, thread, data)
        return True

    async def _stored_thread_row(self, tenant: str, thread_id: str) -> tuple[str, int] | None:
        row = self._threads.get((tenant, thread_id))
        if row is None:
            return None
        if isinstance(row.kept, str):
            return self.blobs.open(row.kept, THREADS, tenant, thread_id), row.version
        return row.kept.model_dump_json(), row.version

    async def _upsert_thread_row(self, tenant: str, thread: ThreadMetadata, data: str) -> None:
        key = (tenant, thread.id)
        if self.blobs is PLAIN:
            self._upsert(self._threads, key, thread.created_at, _THREAD.validate_json(data))
        else:
            self._upsert(
                self._threads, key, thread.created_at, self.blobs.seal(data, THREADS, *key)
            )

    @operation("threads")
    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        """Return a copy of the thread, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        row = self._threads.get((tenant, thread_id))
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        if isinstance(row.kept, str):
            data = self.blobs.open(row.kept, THREADS, tenant, thread_id)
            thread = ThreadMetadata.model_validate_json(data)
        else:
            thread, data = row.kept.model_copy(deep=True), row.kept.model_dump_json()
        self.loaded_threads.remember(thread, tenant, row.version, data)
        return thread

    @operation("threads")
    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        """Return one page of the tenant's threads by creation time."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        rows = [(key, row) for key, row in self._threads.items() if key[0] == tenant]
        return self._page(rows, after, size, order, _THREAD, THREADS)

    @operation("threads", audit=THREAD_DELETE)
    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Remove the thread, its items and its attachments' metadata."""
        tenant = self.tenant_of(context)
        self._threads.pop((tenant, thread_id), None)
        for item_key in [k for k in self._items if k[:2] == (tenant, thread_id)]:
            del self._items[item_key]
        doomed = [
            key
            for key, row in self._attachments.items()
            if key[0] == tenant and row.thread_id == thread_id
        ]
        for key in doomed:
            del self._attachments[key]
        await self.forget_attachments(tenant, [attachment_id for _, attachment_id in doomed])

    # items

    @operation("items")
    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Add an item unless one with its id is stored (a retry never reverts a later save)."""
        tenant = self.tenant_of(context)
        key = (tenant, check_id(thread_id, "thread id"), check_id(item.id, "item id"))
        if key not in self._items:
            self._upsert(self._items, key, item.created_at, self._seal(item, ITEMS, key))

    @operation("items")
    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or replace an item; an existing item keeps its place."""
        tenant = self.tenant_of(context)
        key = (tenant, check_id(thread_id, "thread id"), check_id(item.id, "item id"))
        self._upsert(self._items, key, item.created_at, self._seal(item, ITEMS, key))

    @operation("items")
    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        """Return a copy of the item, or raise ``NotFoundError``."""
        tenant = self.tenant_of(context)
        key = (tenant, thread_id, item_id)
        row = self._items.get(key)
        if row is None:
            raise NotFoundError(f"Item {item_id} not found in thread {thread_id}")
        return await self.present_item(tenant, self._open(row.kept, _ITEM, ITEMS, key))

    @operation("items")
    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        """Return one page of a thread's items by creation time."""
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        rows = [(key, row) for key, row in self._items.items() if key[:2] == (tenant, thread_id)]
        page = self._page(rows, after, size, order, _ITEM, ITEMS)
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
        kept = self._seal(attachment, ATTACHMENTS, key)
        row = self._attachments.get(key)
        created = row.created if row else naive_utc(datetime.now(timezone.utc))
        self._attachments[key] = _AttachmentRow(kept, attachment.thread_id, created)

    @operation("attachments")
    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        """Return a copy of the attachment metadata, or raise ``NotFoundError``."""
        key = (self.tenant_of(context), attachment_id)
        row = self._attachments.get(key)
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        attachment = self._open(row.kept, _ATTACHMENT, ATTACHMENTS, key)
        return await self.present_attachment(key[0], attachment)

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Remove attachment metadata, then its bytes; a missing attachment is a no-op."""
        tenant = self.tenant_of(context)
        if self._attachments.pop((tenant, attachment_id), None) is not None:
            await self.forget_attachments(tenant, [attachment_id])

    @operation("attachments")
    async def orphaned_attachments(
        self, created_before: datetime, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of attachments saved before the cutoff and never put in a thread."""
        orphans = [
            (self._attachments[key].created, key)
            for key in self._attachments
            if self._is_orphan(key, created_before)
        ]
        return [key for _, key in sorted(orphans)[:limit]]

    @operation("attachments")
    async def update_attachment(
        self, tenant: str, attachment_id: str, change: Callable[[Attachment], Attachment]
    ) -> Attachment | None:
        """Replace the stored attachment by ``change(stored)``; None if it is not stored."""
        key = (tenant, attachment_id)
        row = self._attachments.get(key)
        if row is None:
            return None
        changed = change(self._open(row.kept, _ATTACHMENT, ATTACHMENTS, key))
        kept = self._seal(changed, ATTACHMENTS, key)
        self._attachments[key] = _AttachmentRow(kept, changed.thread_id, row.created)
        return changed

    @operation("attachments", audit=ATTACHMENT_DELETE)
    async def delete_orphan(
        self, attachment_id: str, context: TContext, created_before: datetime
    ) -> bool:
        """Delete the metadata if it is still in no thread and saved before the cutoff."""
        key = (self.tenant_of(context), attachment_id)
        return self._is_orphan(key, created_before) and bool(self._attachments.pop(key, None))

    @operation("attachments")
    async def attachment_keys(
        self, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of every tenant's attachments, in that order, after ``after``."""
        return sorted(key for key in self._attachments if after is None or key > after)[:limit]

    def _is_orphan(self, key: tuple[str, str], created_before: datetime) -> bool:
        row = self._attachments.get(key)
        return row is not None and row.thread_id is None and row.created < naive_utc(created_before)

    def telemetry_attributes(self) -> Attributes:
        """``db.system.name`` is ``memory``."""
        return {DB_SYSTEM_NAME: "memory"}

    def _upsert(self, table: dict[K, _Row[M]], key: K, created_at: datetime, kept: M | str) -> None:
        """Keep ``kept`` (what ``_seal`` made of a model) at ``key``; a row keeps its place."""
        existing = table.get(key)
        place = existing.place if existing else (naive_utc(created_at), next(self._counter))
        table[key] = _Row(place, kept, existing.version + 1 if existing else 0)

    def _seal(self, model: M, table: str, key: tuple[str, ...]) -> M | str:
        """What to keep of ``model`` at the row ``key``: a copy, or with encryption its envelope."""
        if self.blobs is PLAIN:
            return model.model_copy(deep=True)
        return self.blobs.seal(model.model_dump_json(), table, *key)

    def _open(self, kept: M | str, adapter: TypeAdapter[M], table: str, key: tuple[str, ...]) -> M:
        """A copy of the model kept at the row ``key`` (an envelope is opened and checked)."""
        if isinstance(kept, str):
            return adapter.validate_json(self.blobs.open(kept, table, *key))
        return kept.model_copy(deep=True)

    def _page(
        self,
        rows: list[tuple[K, _Row[M]]],
        after: str | None,
        limit: int,
        order: str,
        adapter: TypeAdapter[M],
        table: str,
    ) -> Page[M]:
        """One page of ``rows`` (keyed by row, the last key being the id) in their order."""
        rows = sorted(rows, key=lambda pair: pair[1].place, reverse=order == "desc")
        if after is not None:
            ids = [key[-1] for key, _ in rows]
            if after not in ids:
                raise NotFoundError(f"Cursor {after} names nothing in this list")
            rows = rows[ids.index(after) + 1 :]
        kept = [self._open(row.kept, adapter, table, key) for key, row in rows[: limit + 1]]
        return make_page(kept, limit)


K = TypeVar("K", bound=tuple[str, ...])
