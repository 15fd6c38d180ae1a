"""``chatkit-stores erase-tenant``: delete everything one tenant has stored (a GDPR erasure).

What goes: every thread, item and attachment record of the tenant and, given the attachment
store, every file it keeps for the tenant (attachment bytes, unfinished uploads, the tenant's
folder). Other tenants' rows and files are never touched: every statement names the tenant.

How: a pass deletes the tenant's attachment records, then its items, then its threads, at most
``batch_size`` rows per statement; each batch of attachment records is followed by its bytes
(records first, then bytes, as ``delete_attachment`` does). The pass ends by deleting whatever
is left in the tenant's folder of the attachment store: bytes whose records an interrupted run
already deleted, uploads that never got a record. Every batch commits on its own, so a run
that is interrupted leaves fewer rows, and running it again finishes the job.

Overlap: the erasure wins over writes that overlap it. Passes repeat until one finds nothing
of the tenant, so a thread, item or attachment a request writes while the erasure runs is
deleted by the next pass, and an upload in flight fails. A write after the last (empty) pass
comes after the erasure: block the tenant's access first. A tenant still being written to after
``MAX_PASSES`` passes stops the run with :class:`OperationError`.

Audit: a ``thread.delete`` or ``attachment.delete`` event per record, ``attachment.bytes.delete``
per attachment's bytes (all ``via="tenant.erase"``), and one ``tenant.erase`` event at the end
whose outcome says whether the run finished.

SQL stores are read and written through their tables (rows whose JSON no longer parses go too).
Other stores of this package (``MemoryStore``) are erased through the store API: threads with
``delete_thread``, attachments with ``delete_attachment``; there, items saved under a thread id
that has no thread are out of reach.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Final, Protocol, runtime_checkable

from sqlalchemy import Table, func, select

from ..audit import (
    ATTACHMENT_DELETE,
    OK,
    THREAD_DELETE,
    AuditEvent,
    audit_scope,
    emit,
    error_name,
    outcome_of,
)
from ..base import StoreBase
from ..blobs import Encrypted
from ..files.base import AttachmentStoreBase
from ..sql import SQLStore
from ..tenancy import TenantContext, check_tenant
from . import OperationError
from .database import require_tables
from .progress import Progress
from .wording import plural

TENANT_ERASE: Final = "tenant.erase"
"""The audit action of an erasure (and the ``via`` of the deletes it makes)."""
MAX_PASSES = 5
"""Passes after which a tenant still being written to stops the erasure."""
KINDS = ("attachments", "items", "threads")
"""What a pass deletes, in this order (attachments first: ``delete_thread`` of a store erased
through its API would delete a thread's attachments uncounted)."""

ProgressFactory = Callable[[str, "int | None"], Progress]


@runtime_checkable
class TenantFiles(Protocol):
    """What an erasure needs from an attachment store (disk and S3 have it)."""

    async def tenant_files(self, tenant: str) -> list[str]:
        """The names of the attachment files stored for ``tenant``."""
        ...

    async def delete_tenant_files(self, tenant: str) -> int:
        """Delete every file of ``tenant``; return how many attachment files went."""
        ...

    async def delete_bytes(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        """Delete the bytes of attachments whose records were deleted (audited)."""
        ...


@dataclass
class Counts:
    """Threads, items and attachment records, and attachment files (bytes)."""

    threads: int = 0
    items: int = 0
    attachments: int = 0
    files: int = 0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        for field in fields(Counts):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    @property
    def total(self) -> int:
        """Everything counted."""
        return self.threads + self.items + self.attachments + self.files


@dataclass
class EraseReport(Counts):
    """What an erasure removed (or with ``dry_run`` would remove) of one tenant."""

    tenant: str = ""
    passes: int = 0
    with_files: bool = True
    """Whether an attachment store was given (else files are neither counted nor deleted)."""

    def summary(self, *, dry_run: bool) -> str:
        """``erased tenant 'acme': 2 threads, 5 items, 1 attachment and 1 attachment file``."""
        counts = [
            plural(self.threads, "thread"),
            plural(self.items, "item"),
            plural(self.attachments, "attachment"),
        ]
        if self.with_files:
            counts.append(plural(self.files, "attachment file"))
        listed = ", ".join(counts[:-1]) + f" and {counts[-1]}"
        if dry_run:
            return f"would erase tenant {self.tenant!r}: {listed} (dry run: nothing deleted)"
        passes = f" in {plural(self.passes, 'pass', 'passes')}"
        return f"erased tenant {self.tenant!r}: {listed}{passes}"


async def erase_tenant(
    store: StoreBase[Any],
    tenant: str,
    *,
    files: AttachmentStoreBase[Any] | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    progress: ProgressFactory | None = None,
    on_batch: Callable[[str, int], object] | None = None,
) -> EraseReport:
    """Delete every thread, item, attachment record and (with ``files``) attachment file of
    ``tenant``; with ``dry_run`` only count them. See the module docstring.

    ``on_batch(kind, count)`` is called (and awaited, if it returns an awaitable) after each
    batch is deleted; ``kind`` is ``attachments``, ``items``, ``threads`` or ``files``.
    """
    tenant = check_tenant(tenant, source="the tenant to erase")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if files is not None and not isinstance(files, TenantFiles):
        raise TypeError(f"{type(files).__name__} cannot list or delete a tenant's files")
    rows = _rows(store, tenant, batch_size)
    if isinstance(store, SQLStore):
        await require_tables(store)
    report = EraseReport(tenant=tenant, with_files=files is not None)
    if dry_run:
        report.add(await rows.count())
        if files is not None:
            report.files = len(await files.tenant_files(tenant))
        return report
    event = functools.partial(AuditEvent, TENANT_ERASE, tenant=tenant, store=type(store).__name__)
    bars = await _bars(rows, progress)
    done = on_batch or (lambda kind, count: None)

    async def removed(kind: str, count: int) -> None:
        if kind in bars:
            bars[kind].advance(count)
        result = done(kind, count)
        if inspect.isawaitable(result):
            await result

    try:
        with audit_scope(TENANT_ERASE):
            while True:
                if report.passes == MAX_PASSES:
                    raise OperationError(
                        f"tenant {tenant!r} is still being written to after {MAX_PASSES} "
                        "passes; block its access and run the erasure again "
                        f"(removed so far: {report.total} rows and files)"
                    )
                report.passes += 1
                found = await _one_pass(rows, tenant, files, removed)
                report.add(found)
                if found.total == 0:
                    break
    except BaseException as error:
        await emit(store.audit, event(outcome_of(error), error=error_name(error)), failing=True)
        raise
    finally:
        for bar in bars.values():
            bar.close()
        if isinstance(store.blobs, Encrypted):  # nor its texts in this process's key ring
            store.blobs.keys.forget(tenant)
    await emit(store.audit, event(OK))
    return report


async def _one_pass(
    rows: _Rows,
    tenant: str,
    files: TenantFiles | None,
    removed: Callable[[str, int], Awaitable[None]],
) -> Counts:
    """Delete what the tenant has now, batch by batch; return what went."""
    found = Counts()
    files_before = 0 if files is None else len(await files.tenant_files(tenant))
    present = await rows.count()  # what this pass sets out to delete: it ends, however busy
    for kind in KINDS:  # the tenant is, once that many rows of each kind are gone
        while getattr(found, kind) < getattr(present, kind) and (
            batch := await rows.delete_batch(kind)
        ):
            setattr(found, kind, getattr(found, kind) + len(batch.ids))
            found.items += batch.items
            if kind == "attachments" and files is not None:
                await files.delete_bytes(tenant, batch.ids)  # after their records, as usual
            await removed(kind, len(batch.ids))
    if files is not None:
        # What the batches left: bytes of records an interrupted run deleted, uploads without one.
        swept = await files.delete_tenant_files(tenant)
        found.files = max(files_before, swept)
        await removed("files", swept)
    return found


async def _bars(rows: _Rows, progress: ProgressFactory | None) -> dict[str, Progress]:
    if progress is None:
        return {}
    counts = await rows.count()
    return {kind: progress(kind, getattr(counts, kind)) for kind in KINDS}


@dataclass
class _Batch:
    """The ids of one deleted batch, and the items that went with them (threads deleted
    through the store API take their items along)."""

    ids: list[str]
    items: int = 0

    def __bool__(self) -> bool:
        return bool(self.ids)


class _Rows(Protocol):
    """A tenant's rows in one store: counted, and deleted a batch at a time."""

    async def count(self) -> Counts: ...

    async def delete_batch(self, kind: str) -> _Batch:
        """Delete up to a batch of ``kind``; what went (nothing left: empty)."""
        ...


def _rows(store: StoreBase[Any], tenant: str, batch_size: int) -> _Rows:
    if isinstance(store, SQLStore):
        return _TableRows(store, tenant, batch_size)
    return _StoreRows(store, tenant, batch_size)


class _TableRows:
    """A SQL store's rows of one tenant, through its tables (one statement per step)."""

    def __init__(self, store: SQLStore[Any], tenant: str, batch_size: int) -> None:
        self.store = store
        self.tenant = tenant
        self.batch_size = batch_size
        self.tables: dict[str, Table] = {kind: getattr(store.tables, kind) for kind in KINDS}

    async def count(self) -> Counts:
        """One query: the tenant's rows in each table."""
        counts = [
            select(func.count()).select_from(t).where(t.c.tenant == self.tenant).scalar_subquery()
            for t in self.tables.values()
        ]
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(select(*counts))).one()
        return Counts(**{kind: int(n) for kind, n in zip(self.tables, row, strict=True)})

    async def delete_batch(self, kind: str) -> _Batch:
        """The tenant's first rows of ``kind`` by ``seq``, deleted by key."""
        t = self.tables[kind]
        mine = t.c.tenant == self.tenant
        batch = select(t.c.seq, t.c.id).where(mine).order_by(t.c.seq).limit(self.batch_size)
        async with self.store.engine.connect() as conn:  # autocommit: each statement commits
            rows = (await conn.execute(batch)).all()
            if rows:
                await conn.execute(t.delete().where(mine, t.c.seq.in_([r[0] for r in rows])))
        ids = [row[1] for row in rows]
        action = {"threads": THREAD_DELETE, "attachments": ATTACHMENT_DELETE}.get(kind)
        if action is not None:
            await _audit_each(self.store, action, self.tenant, ids)
        return _Batch(ids)


async def _audit_each(store: StoreBase[Any], action: str, tenant: str, ids: list[str]) -> None:
    """One event per deleted record, as the store's own delete would emit it."""
    threads = action == THREAD_DELETE
    for object_id in ids:
        event = AuditEvent(
            action, OK, tenant, type(store).__name__, TENANT_ERASE,
            thread_id=object_id if threads else None,
            attachment_id=None if threads else object_id,
        )  # fmt: skip
        await emit(store.audit, event)


class _StoreRows:
    """Any store of this package, through its API (``MemoryStore``): attachments are deleted
    with ``delete_attachment``; threads, with their items, by ``delete_thread``."""

    def __init__(self, store: StoreBase[Any], tenant: str, batch_size: int) -> None:
        self.store = store
        self.tenant = tenant
        self.context: Any = TenantContext(tenant)
        self.batch_size = batch_size

    async def count(self) -> Counts:
        """Walk the tenant's threads, their items and its attachment keys."""
        counts = Counts(attachments=len(await self._attachment_ids(every=True)))
        after: str | None = None
        while True:
            page = await self.store.load_threads(self.batch_size, after, "asc", self.context)
            counts.threads += len(page.data)
            for thread in page.data:
                counts.items += await self._items_of(thread.id)
            if not page.has_more:
                return counts
            after = page.after

    async def delete_batch(self, kind: str) -> _Batch:
        """Delete a page of attachments or threads (items go with their threads)."""
        if kind == "attachments":
            ids = await self._attachment_ids(every=False)
            for attachment_id in ids:
                await self.store.delete_attachment(attachment_id, self.context)
            return _Batch(ids)
        if kind == "items":
            return _Batch([])
        page = await self.store.load_threads(self.batch_size, None, "asc", self.context)
        batch = _Batch([thread.id for thread in page.data])
        for thread_id in batch.ids:
            batch.items += await self._items_of(thread_id)
            await self.store.delete_thread(thread_id, self.context)
        return batch

    async def _items_of(self, thread_id: str) -> int:
        count, after = 0, None
        while True:
            page = await self.store.load_thread_items(
                thread_id, after, self.batch_size, "asc", self.context
            )
            count += len(page.data)
            if not page.has_more:
                return count
            after = page.after

    async def _attachment_ids(self, *, every: bool) -> list[str]:
        """The ids of the tenant's attachments: the first batch, or ``every`` one."""
        ids: list[str] = []
        after = (self.tenant, "")
        while keys := await self.store.attachment_keys(after, limit=self.batch_size):
            ids += [key[1] for key in keys if key[0] == self.tenant]
            if not every or keys[-1][0] != self.tenant:
                break
            after = keys[-1]
        return ids
