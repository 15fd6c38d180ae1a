"""The ChatKit workload: realistic items, a chat turn, history browsing, attachments, deletes.

Items are built with ``chatkit.types`` models; their JSON is 0.5-20 KB, like real chats
(long assistant answers, widgets with many rows, reasoning workflows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from random import Random
from typing import Any, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import (
    Attachment,
    DurationSummary,
    SearchTask,
    ThoughtTask,
    ThreadItem,
    ThreadMetadata,
    URLSource,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Badge, Card, Row, Text, Title
from pydantic import BaseModel

from chatkit_stores.testing import models

from .variants import BenchStore

T = TypeVar("T")
Record = Callable[[str, Awaitable[Any]], Awaitable[Any]]

MAIN_THREAD = "thr_main"
"""Every client tenant's thread that turns append to."""
LONG_THREAD = "thr_long"
"""The browse tenant's long thread, paged backwards."""
BROWSE = {"tenant_id": "browse"}
"""The tenant whose history every variant browses (read only)."""
PAGE = 20
SEED_ITEMS = 20
"""Items already in a client's thread before its first turn."""

_VOCABULARY = (
    "the store keeps every thread item as JSON and pages through history by time while many "
    "tenants chat at once with widgets workflows and attachments answer question model tool "
    "search result summary 2025 invoice Zürich naïve café 😀 data index latency"
)
_LOREM = " ".join(Random(0).choice(_VOCABULARY.split()) for _ in range(12_000))


def now() -> datetime:
    """The current time as a naive UTC timestamp (how the server stamps items)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Content:
    """Builds threads, items and attachments of realistic sizes (seeded, reproducible sizes)."""

    def __init__(self, seed: int = 0) -> None:
        self.random = Random(seed)

    def text(self, low: int, high: int) -> str:
        """A slice of filler text between ``low`` and ``high`` characters long."""
        size = self.random.randint(low, high)
        start = self.random.randint(0, len(_LOREM) - size)
        return _LOREM[start : start + size]

    def thread(
        self, created_at: datetime | None = None, thread_id: str | None = None
    ) -> ThreadMetadata:
        """A new thread with a title and metadata."""
        title = self.text(10, 60)
        return models.thread(thread_id, created_at=created_at or now(), title=title)

    def attachment(self, thread_id: str | None) -> Attachment:
        """Attachment metadata, a file or an image (with upload descriptor and preview URL)."""
        kind = self.random.choice(["file", "image"])
        return models.ATTACHMENT_BUILDERS[kind](thread_id=thread_id)

    def turn_items(self, thread_id: str) -> list[ThreadItem]:
        """What one turn adds: a user message, then an answer, a widget and a workflow."""
        return [
            models.user_message(thread_id, now(), text=self.text(200, 2000)),
            models.assistant_message(thread_id, now(), text=self.text(800, 19_000)),
            self.widget(thread_id),
            self.workflow(thread_id),
        ]

    def widget(self, thread_id: str) -> WidgetItem:
        """A card with a title and 3-40 rows of text and badges (1-8 KB)."""
        rows = [
            Row(children=[Text(value=self.text(20, 120)), Badge(label=self.text(3, 12))])
            for _ in range(self.random.randint(3, 40))
        ]
        card = Card(children=[Title(value=self.text(10, 40)), *rows])
        return WidgetItem(
            id=models.new_id("wdg"),
            thread_id=thread_id,
            created_at=now(),
            widget=card,
            copy_text=self.text(50, 300),
        )

    def workflow(self, thread_id: str) -> WorkflowItem:
        """A reasoning workflow: thoughts, a web search with sources, a duration summary."""
        sources = [
            URLSource(title=self.text(10, 60), url=f"https://example.com/{n}")
            for n in range(self.random.randint(1, 8))
        ]
        tasks = [
            ThoughtTask(content=self.text(100, 2500), status_indicator="complete"),
            SearchTask(queries=[self.text(10, 50)], sources=sources),
        ]
        return WorkflowItem(
            id=models.new_id("wf"),
            thread_id=thread_id,
            created_at=now(),
            workflow=Workflow(type="reasoning", tasks=tasks, summary=DurationSummary(duration=9)),
        )

    def history(self, thread_id: str, count: int, start: datetime) -> Iterator[ThreadItem]:
        """``count`` turn items one second apart from ``start``."""
        n = 0
        while n < count:
            for item in self.turn_items(thread_id):
                if n < count:
                    yield item.model_copy(update={"created_at": start + timedelta(seconds=n)})
                    n += 1


async def turn(
    store: BenchStore,
    context: dict[str, str],
    items: list[ThreadItem],
    record: Record,
) -> None:
    """One chat turn as ChatKitServer runs it: load, read the last 20 items, add four, save."""
    thread = await record("load_thread", store.load_thread(MAIN_THREAD, context))
    await record("recent_items", store.load_thread_items(MAIN_THREAD, None, PAGE, "desc", context))
    for item in items:
        await record("add_thread_item", store.add_thread_item(MAIN_THREAD, item, context))
    await record("save_thread", store.save_thread(thread, context))


@dataclass
class HistoryWalk:
    """Pages backwards through the browse tenant's threads and long thread, wrapping around."""

    threads_after: str | None = None
    items_after: str | None = None

    async def step(self, store: BenchStore, record: Record) -> None:
        """Read the next page of threads and the next (older) page of the long thread."""
        threads = await record(
            "threads_page", store.load_threads(PAGE, self.threads_after, "desc", BROWSE)
        )
        self.threads_after = threads.after
        items = await record(
            "items_page",
            store.load_thread_items(LONG_THREAD, self.items_after, PAGE, "desc", BROWSE),
        )
        self.items_after = items.after


async def session(
    store: BenchStore,
    context: dict[str, str],
    content: Content,
    walk: HistoryWalk,
    record: Record,
) -> None:
    """One round of every operation, each timed: a turn, browsing, an attachment, a delete."""
    await turn(store, context, content.turn_items(MAIN_THREAD), record)
    await walk.step(store, record)
    scratch = content.thread()
    await store.save_thread(scratch, context)
    await store.add_thread_item(scratch.id, content.turn_items(scratch.id)[0], context)
    attachment = content.attachment(scratch.id)
    await record("save_attachment", store.save_attachment(attachment, context))
    await record("load_attachment", store.load_attachment(attachment.id, context))
    await record("delete_thread", store.delete_thread(scratch.id, context))


# The correctness check: every variant runs the same calls and must see the same results.


@dataclass
class Script:
    """Fixed threads (two with equal timestamps), items (with ties) and an attachment."""

    threads: list[ThreadMetadata]
    items: list[ThreadItem]
    attachment: Attachment


def make_script() -> Script:
    """Build the fixed script once; replay it on each variant in its own tenant."""
    content = Content(seed=1)
    t0 = models.T0
    threads = [content.thread(t0 + timedelta(seconds=s)) for s in (0, 1, 1)]
    main = threads[0].id
    offsets = [0, 1, 1, 2, 3, 3, 4]
    items = [
        item.model_copy(update={"created_at": t0 + timedelta(seconds=offset)})
        for item, offset in zip(content.history(main, len(offsets), t0), offsets, strict=True)
    ]
    return Script(threads, items, content.attachment(main))


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


async def replay(store: BenchStore, script: Script, tenant: str) -> list[Any]:
    """Run the script on ``store`` as ``tenant``; return everything the reads returned."""
    context, stranger = {"tenant_id": tenant}, {"tenant_id": f"{tenant}-stranger"}
    main, attachment_id = script.threads[0].id, script.attachment.id
    seen: list[Any] = []

    async def look(call: Awaitable[Any]) -> None:
        try:
            seen.append(_dump(await call))
        except NotFoundError:
            seen.append("NotFoundError")

    for thread in script.threads:
        await store.save_thread(thread, context)
    for item in script.items:
        await store.add_thread_item(main, item, context)
    await store.save_thread(script.threads[0].model_copy(update={"title": "Renamed"}), context)
    await store.save_attachment(script.attachment, context)
    await look(store.load_thread(main, context))
    for order in ("asc", "desc"):
        after: str | None = None
        while True:
            page = await store.load_threads(2, after, order, context)
            seen.append(_dump(page))
            if (after := page.after) is None:
                break
        while True:
            items = await store.load_thread_items(main, after, 3, order, context)
            seen.append(_dump(items))
            if (after := items.after) is None:
                break
    await look(store.load_attachment(attachment_id, context))
    await look(store.load_thread(main, stranger))
    await look(store.load_thread_items(main, None, 10, "asc", stranger))
    await look(store.load_attachment(attachment_id, stranger))
    await look(store.load_thread_items(main, "msg_missing", 10, "asc", context))
    await store.delete_thread(main, context)
    await look(store.load_thread(main, context))
    await look(store.load_attachment(attachment_id, context))
    await look(store.load_thread_items(main, None, 10, "asc", context))
    await look(store.load_threads(10, None, "asc", context))
    return seen
