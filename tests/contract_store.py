"""A correct store written only from ChatKit's contract, as an outside team would write one.

Plain dicts; its own id scheme (``thread-<uuid4>``, no ChatKit prefix); the tenant read from
``context["org"]``; ids global (one dict per kind, each object remembering its org); timestamps
kept as given and ordered as the machine reads them (a naive one as local time); no argument
checks the server does not need; an unknown cursor raises ``LookupError``; ``add_thread_item``
replaces; ``delete_thread`` removes the thread and its items, as ``chatkit/store.py`` says.
``tests/test_suite_verdicts.py`` runs the conformance suite on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata

M = TypeVar("M", ThreadMetadata, ThreadItem)


def instant(at: datetime) -> datetime:
    """An aware datetime for ordering: a naive one is read as the machine's local time."""
    return at.astimezone()


def page_of(objects: Sequence[M], after: str | None, limit: int, order: str) -> Page[M]:
    """The page after ``after``: ordered by created_at, ties in insertion order (stable sort)."""
    ordered = sorted(objects, key=lambda obj: instant(obj.created_at))
    if order == "desc":
        ordered.reverse()
    ids = [obj.id for obj in ordered]
    if after is not None:
        if after not in ids:
            raise LookupError(f"cursor {after!r} names nothing in this list")
        ordered = ordered[ids.index(after) + 1 :]
    data = [obj.model_copy(deep=True) for obj in ordered[:limit]]
    has_more = len(ordered) > limit
    return Page(data=data, has_more=has_more, after=data[-1].id if has_more else None)


class ContractStore(Store[dict[str, Any]]):
    """ChatKit's ``Store`` on dicts, keyed by id, each value remembering its org."""

    def __init__(self) -> None:
        self.threads: dict[str, tuple[str, ThreadMetadata]] = {}
        self.items: dict[str, dict[str, tuple[str, ThreadItem]]] = {}
        self.attachments: dict[str, tuple[str, Attachment]] = {}

    def generate_thread_id(self, context: dict[str, Any]) -> str:
        """``thread-<uuid4>``."""
        return f"thread-{uuid.uuid4()}"

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: dict[str, Any]
    ) -> str:
        """``<type>-<uuid4>``."""
        return f"{item_type}-{uuid.uuid4()}"

    async def load_thread(self, thread_id: str, context: dict[str, Any]) -> ThreadMetadata:
        """The caller's thread."""
        org, thread = self.threads.get(thread_id, (None, None))
        if thread is None or org != context["org"]:
            raise NotFoundError(thread_id)
        return thread.model_copy(deep=True)

    async def save_thread(self, thread: ThreadMetadata, context: dict[str, Any]) -> None:
        """Insert or replace; a thread of another org is left alone."""
        org, _ = self.threads.get(thread.id, (context["org"], None))
        if org == context["org"]:
            metadata = ThreadMetadata.model_validate(thread.model_dump(exclude={"items"}))
            self.threads[thread.id] = (org, metadata)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: dict[str, Any]
    ) -> Page[ThreadMetadata]:
        """A page of the caller's threads."""
        mine = [t for org, t in self.threads.values() if org == context["org"]]
        return page_of(mine, after, limit, order)

    async def delete_thread(self, thread_id: str, context: dict[str, Any]) -> None:
        """The thread and its items."""
        org, _ = self.threads.get(thread_id, (None, None))
        if org == context["org"]:
            del self.threads[thread_id]
        thread_items = self.items.get(thread_id, {})
        for item_id, (owner, _) in list(thread_items.items()):
            if owner == context["org"]:
                del thread_items[item_id]

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: dict[str, Any]
    ) -> Page[ThreadItem]:
        """A page of the thread's items the caller owns."""
        owned = self.items.get(thread_id, {}).values()
        return page_of([i for org, i in owned if org == context["org"]], after, limit, order)

    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: dict[str, Any]
    ) -> None:
        """Store the item (an id already stored is replaced)."""
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: dict[str, Any]) -> None:
        """Insert or replace; an item of another org is left alone."""
        thread_items = self.items.setdefault(thread_id, {})
        org, _ = thread_items.get(item.id, (context["org"], None))
        if org == context["org"]:
            thread_items[item.id] = (org, item.model_copy(deep=True))

    async def load_item(self, thread_id: str, item_id: str, context: dict[str, Any]) -> ThreadItem:
        """The caller's item of that thread."""
        org, item = self.items.get(thread_id, {}).get(item_id, (None, None))
        if item is None or org != context["org"]:
            raise NotFoundError(item_id)
        return item.model_copy(deep=True)

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: dict[str, Any]
    ) -> None:
        """Remove the caller's item."""
        thread_items = self.items.get(thread_id, {})
        org, _ = thread_items.get(item_id, (None, None))
        if org == context["org"]:
            del thread_items[item_id]

    async def save_attachment(self, attachment: Attachment, context: dict[str, Any]) -> None:
        """Insert or replace; an attachment of another org is left alone."""
        org, _ = self.attachments.get(attachment.id, (context["org"], None))
        if org == context["org"]:
            self.attachments[attachment.id] = (org, attachment.model_copy(deep=True))

    async def load_attachment(self, attachment_id: str, context: dict[str, Any]) -> Attachment:
        """The caller's attachment."""
        org, attachment = self.attachments.get(attachment_id, (None, None))
        if attachment is None or org != context["org"]:
            raise NotFoundError(attachment_id)
        return attachment.model_copy(deep=True)

    async def delete_attachment(self, attachment_id: str, context: dict[str, Any]) -> None:
        """Remove the caller's attachment."""
        org, _ = self.attachments.get(attachment_id, (None, None))
        if org == context["org"]:
            del self.attachments[attachment_id]
