"""``chatkit-stores prune``: delete threads nobody has touched since a cutoff.

A thread's last activity is the later of its ``created_at`` and its newest item's
``created_at``. Threads whose last activity is before the cutoff are found a batch at a time (in
``seq`` order, optionally for one tenant) and deleted through the store's own
``delete_inactive_thread``: the deleting statement checks the condition again, so a thread that
got a message after it was listed is kept; items and attachment metadata go in the same
transaction, and when an attachment store is linked to the store, the attachments' bytes too. A
dry run only lists them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from ..sql import SQLStore
from ..tenancy import TenantContext
from .database import require_tables
from .wording import plural


@dataclass(frozen=True)
class StaleThread:
    """A thread due for deletion, with what goes with it."""

    tenant: str
    id: str
    last_activity: datetime
    items: int
    attachments: int

    def __str__(self) -> str:
        return (
            f"thread tenant={self.tenant!r} id={self.id!r} "
            f"last activity {self.last_activity.isoformat(sep=' ', timespec='seconds')} "
            f"({plural(self.items, 'item')}, {plural(self.attachments, 'attachment')})"
        )


@dataclass
class PruneReport:
    """How many threads, items and attachments were (or would be) deleted."""

    cutoff: datetime
    threads: int = 0
    items: int = 0
    attachments: int = 0

    def summary(self, *, dry_run: bool) -> str:
        """``removed 2 threads with 5 items and 1 attachment, inactive since before ...``."""
        verb = "would remove" if dry_run else "removed"
        return (
            f"{verb} {plural(self.threads, 'thread')} with {plural(self.items, 'item')} and "
            f"{plural(self.attachments, 'attachment')}, inactive since before "
            f"{self.cutoff.isoformat(sep=' ', timespec='seconds')} UTC"
        )


def cutoff_for(older_than: timedelta, now: datetime | None = None) -> datetime:
    """The naive UTC instant ``older_than`` before ``now`` (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    return (now - older_than).astimezone(timezone.utc).replace(tzinfo=None)


async def stale_threads(
    store: SQLStore[Any], cutoff: datetime, *, tenant: str | None = None, batch_size: int = 500
) -> AsyncGenerator[list[StaleThread], None]:
    """Yield threads last active before ``cutoff`` in ``seq`` order, a batch at a time."""
    t, i, a = store.tables.threads, store.tables.items, store.tables.attachments
    of_thread = [i.c.tenant == t.c.tenant, i.c.thread_id == t.c.id]
    recent = select(i.c.seq).where(*of_thread, i.c.created_at >= cutoff).exists()
    newest_item = select(func.max(i.c.created_at)).where(*of_thread).scalar_subquery()
    items = select(func.count()).select_from(i).where(*of_thread).scalar_subquery()
    attachments = (
        select(func.count())
        .select_from(a)
        .where(a.c.tenant == t.c.tenant, a.c.thread_id == t.c.id)
        .scalar_subquery()
    )
    last = 0
    while True:
        stmt = (
            select(t.c.seq, t.c.tenant, t.c.id, t.c.created_at, newest_item, items, attachments)
            .where(t.c.seq > last, t.c.created_at < cutoff, ~recent)
            .order_by(t.c.seq)
            .limit(batch_size)
        )
        if tenant is not None:
            stmt = stmt.where(t.c.tenant == tenant)
        async with store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [
            StaleThread(
                tenant=row[1],
                id=row[2],
                last_activity=max(row[3], row[4]) if row[4] is not None else row[3],
                items=int(row[5]),
                attachments=int(row[6]),
            )
            for row in rows
        ]
        if len(rows) < batch_size:
            return


async def prune(
    store: SQLStore[Any],
    older_than: timedelta,
    *,
    tenant: str | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    on_thread: Callable[[StaleThread], None] = lambda thread: None,
    now: datetime | None = None,
) -> PruneReport:
    """Delete (or with ``dry_run`` only list) threads inactive for ``older_than``."""
    await require_tables(store)
    report = PruneReport(cutoff_for(older_than, now))
    batches = stale_threads(store, report.cutoff, tenant=tenant, batch_size=batch_size)
    async with aclosing(batches):
        async for batch in batches:
            for thread in batch:
                context = TenantContext(thread.tenant)
                if not dry_run and not await store.delete_inactive_thread(
                    thread.id, context, report.cutoff
                ):
                    continue  # active again since it was listed: kept
                report.threads += 1
                report.items += thread.items
                report.attachments += thread.attachments
                on_thread(thread)
    return report
