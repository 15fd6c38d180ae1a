"""What every store of this package shares: ids, tenants, argument checks, page rules."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypedDict, TypeVar

from chatkit.store import Store, StoreItemType, default_generate_id
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata, UserMessageItem

from .audit import AuditHook
from .blobs import PLAIN, Blobs, Encrypted
from .concurrency import LoadedThreads, ThreadConflicts, save_thread
from .encryption import KeyRing
from .telemetry import DB_SYSTEM_NAME, STORE_PROFILE, Attributes, Profile, Telemetry, operation
from .telemetry import DEFAULT as DEFAULT_TELEMETRY
from .tenancy import (
    MAX_KEY_LENGTH,
    TenantContext,
    TenantResolver,
    check_tenant,
    default_tenant,
    is_storable_key,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

TContext = TypeVar("TContext")
T = TypeVar("T")
Order = Literal["asc", "desc"]

DEFAULT_MAX_PAGE_SIZE = 1000


class LinkedAttachmentStore(Protocol):
    """What a store needs from the attachment store linked to it."""

    async def present(self, tenant: str, attachment: Attachment, *, check: bool) -> Attachment:
        """Return the attachment as it should be shown now (fresh preview URL, upload state)."""
        ...

    async def delete_bytes(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        """Delete the bytes of attachments whose metadata was deleted."""
        ...


class StoreOptions(TypedDict, total=False):
    """The keyword options every store of this package takes (one place: add an option here)."""

    tenant: TenantResolver | None
    """Turns a request context into a tenant key (default: ``tenant_id``, else ``user_id``)."""
    max_page_size: int
    """The largest page a ``load_*`` call returns (larger limits are clamped)."""
    audit: AuditHook | None
    """Called with an ``AuditEvent`` for deletes (see ``chatkit_stores.audit``)."""
    telemetry: Telemetry | None
    """Where spans and durations go; ``None``: the global OpenTelemetry providers."""
    thread_conflicts: ThreadConflicts
    """What a save of a thread changed meanwhile does: merge, raise or overwrite."""
    encryption: KeyRing | None
    """Seal the JSON of every thread, item and attachment with these keys (``encryption``)."""


class StoreBase(Store[TContext], Generic[TContext]):
    """Tenant resolution, 128-bit ids, page-argument rules and observability shared by all stores.

    ``audit``: a hook called with an ``AuditEvent`` for deletes (see ``chatkit_stores.audit``).
    ``telemetry``: where spans and durations go; ``None`` follows the global OpenTelemetry
    providers (see ``chatkit_stores.telemetry``). Both can also be set as attributes later.
    """

    telemetry_profile: ClassVar[Profile] = STORE_PROFILE

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        check_options(self, options, StoreOptions)
        tenant = options.get("tenant")
        max_page_size = options.get("max_page_size", DEFAULT_MAX_PAGE_SIZE)
        audit = options.get("audit")
        telemetry = options.get("telemetry")
        thread_conflicts = options.get("thread_conflicts", "merge")
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be at least 1, got {max_page_size}")
        self._resolve_tenant: TenantResolver = tenant or default_tenant
        self.max_page_size = max_page_size
        self.attachment_store: LinkedAttachmentStore | None = None
        self.audit: AuditHook | None = audit
        self.telemetry: Telemetry = telemetry if telemetry is not None else DEFAULT_TELEMETRY
        if thread_conflicts not in ("merge", "raise", "overwrite"):
            raise ValueError(
                f"thread_conflicts must be merge, raise or overwrite, not {thread_conflicts!r}"
            )
        self.thread_conflicts: ThreadConflicts = thread_conflicts
        self.loaded_threads = LoadedThreads()
        encryption = options.get("encryption")
        self.blobs: Blobs = PLAIN if encryption is None else Encrypted(encryption)
        """How a model's JSON is kept and read back (the one seam for both: ``blobs``)."""

    @operation("threads")
    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Insert or replace a thread; never undoes a change saved since it was loaded.

        By the ``thread_conflicts`` rule (``concurrency``), with the store's
        ``_swap_thread_row``, ``_stored_thread_row`` and ``_upsert_thread_row``.
        """
        tenant = self.tenant_of(context)
        check_id(thread.id, "thread id")
        data = thread_metadata(thread).model_dump_json()
        await save_thread(self.loaded_threads, self, thread, tenant, data, self.thread_conflicts)

    async def _swap_thread_row(
        self, tenant: str, thread: ThreadMetadata, data: str, version: int
    ) -> bool:
        raise NotImplementedError

    async def _stored_thread_row(self, tenant: str, thread_id: str) -> tuple[str, int] | None:
        raise NotImplementedError

    async def _upsert_thread_row(self, tenant: str, thread: ThreadMetadata, data: str) -> None:
        raise NotImplementedError

    def link_attachment_store(self, attachment_store: LinkedAttachmentStore) -> None:
        """Delete bytes with ``delete_thread`` and refresh preview URLs on load."""
        self.attachment_store = attachment_store

    def generate_thread_id(self, context: TContext) -> str:
        """Return a new thread id: ChatKit's ``thr_`` prefix and 128 random bits."""
        return _random_id("thread")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: TContext
    ) -> str:
        """Return a new item id: ChatKit's prefix for ``item_type`` and 128 random bits."""
        return _random_id(item_type)

    def tenant_of(self, context: TContext) -> str:
        """Return the tenant key of ``context``, or raise ``TenantError``."""
        if isinstance(context, TenantContext):
            return check_tenant(context.tenant_id)
        return check_tenant(self._resolve_tenant(context))

    async def present_attachment(self, tenant: str, attachment: Attachment) -> Attachment:
        """Attachment metadata as loaded: upload state checked, preview URL fresh."""
        if self.attachment_store is None:
            return attachment
        return await self.attachment_store.present(tenant, attachment, check=True)

    async def present_item(self, tenant: str, item: ThreadItem) -> ThreadItem:
        """An item as loaded: a user message's attachment copies get fresh preview URLs."""
        if self.attachment_store is None or not isinstance(item, UserMessageItem):
            return item
        files = self.attachment_store
        item.attachments = [await files.present(tenant, a, check=False) for a in item.attachments]
        return item

    async def forget_attachments(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        """Delete the bytes of attachments whose metadata was just deleted."""
        if self.attachment_store is not None:
            await self.attachment_store.delete_bytes(tenant, attachment_ids)

    # What attachment stores and sweeps need beyond ChatKit's Store: each is one atomic step,
    # so that an upload, a delete and a sweep running at the same time have one winner.

    async def update_attachment(
        self, tenant: str, attachment_id: str, change: Callable[[Attachment], Attachment]
    ) -> Attachment | None:
        """Replace the stored attachment by ``change(stored)`` atomically; None if not stored.

        ``change`` may raise to leave the attachment as it is (the error propagates).
        """
        raise NotImplementedError

    async def delete_orphan(
        self, attachment_id: str, context: TContext, created_before: datetime
    ) -> bool:
        """Delete an attachment's metadata only if it is still in no thread and was saved before
        ``created_before`` (checked in the deleting statement); return whether it was deleted."""
        raise NotImplementedError

    async def attachment_keys(
        self, after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """``(tenant, id)`` of every tenant's attachments, in that order, after ``after``."""
        raise NotImplementedError

    def telemetry_attributes(self) -> Attributes:
        """Span attributes naming the database: ``db.system.name``, ``server.*`` when known."""
        return {DB_SYSTEM_NAME: "other_sql"}

    def collection_name(self, collection: str) -> str:
        """The table behind ``threads``, ``items`` or ``attachments``."""
        return collection

    def page_size(self, limit: int, order: str) -> int:
        """Validate ``order`` and ``limit``; return ``limit`` clamped to ``max_page_size``."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        return min(limit, self.max_page_size)


def check_options(owner: object, given: Mapping[str, object], known: type) -> None:
    """Raise ``TypeError`` for an option ``given`` that the TypedDict ``known`` does not name."""
    unknown = sorted(given.keys() - known.__annotations__.keys())
    if unknown:
        name = type(owner).__name__
        raise TypeError(f"{name}() got an unexpected keyword argument {unknown[0]!r}")


def is_key(value: object) -> bool:
    """Whether ``value`` can be stored as an id: 1-255 characters, no NUL, valid unicode."""
    return isinstance(value, str) and is_storable_key(value)


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be stored as an id, else raise ``ValueError``."""
    if not is_key(value):
        raise ValueError(
            f"{what} must be a string of 1 to {MAX_KEY_LENGTH} characters of valid unicode "
            "without NUL, "
            f"got {value!r:.80}"
        )
    return value


def naive_utc(value: datetime) -> datetime:
    """``value`` as the naive UTC datetime the stores keep and order by (aware ones converted)."""
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def thread_metadata(thread: ThreadMetadata) -> ThreadMetadata:
    """Return only the metadata of a thread (ChatKit sometimes saves a full ``Thread``)."""
    if type(thread) is ThreadMetadata:
        return thread
    return ThreadMetadata.model_validate(thread.model_dump(exclude={"items"}))


def make_page(
    rows: Sequence[T], limit: int, id_of: Any = lambda obj: obj.id, *, more: bool = False
) -> Page[T]:
    """Build a page from up to ``limit + 1`` ordered rows (the extra row means ``has_more``),
    or from ``limit`` rows and ``more`` when the caller left the extra row unparsed."""
    has_more = more or len(rows) > limit
    data = list(rows[:limit])
    return Page(data=data, has_more=has_more, after=id_of(data[-1]) if has_more else None)


def _random_id(item_type: StoreItemType) -> str:
    prefix = default_generate_id(item_type).rsplit("_", 1)[0]
    return f"{prefix}_{uuid.uuid4().hex}"
