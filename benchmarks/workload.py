"""The ChatKit workload: realistic items, a chat turn, history browsing, attachments, deletes.

Items are built with ``chatkit.types`` models; their JSON is 0.5-20 KB, like real chats
(long assistant answers, widgets with many rows, reasoning workflows).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from random import Random
from time import perf_counter
from typing import Any, TypeVar

from chatkit.store import NotFoundError
from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    DurationSummary,
    FileAttachment,
    ImageAttachment,
    InferenceOptions,
    SearchTask,
    ThoughtTask,
    ThreadItem,
    ThreadMetadata,
    URLSource,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
    Workflow,
    WorkflowItem,
)
from chatkit.widgets import Badge, Card, Row, Text, Title
from pydantic import AnyUrl, BaseModel

from .variants import BenchStore

T = TypeVar("T")
T0 = datetime(2025, 3, 14, 15, 9, 26, 535897)
"""When seeded history starts (with microseconds, as real timestamps have)."""
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


def new_id(prefix: str) -> str:
    """A fresh id with ChatKit's prefix."""
    return f"{prefix}_{uuid.uuid4().hex}"


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
        return ThreadMetadata(
            id=thread_id or new_id("thr"),
            title=self.text(10, 60),
            created_at=created_at or now(),
            metadata={"model": "gpt-x", "labels": [self.text(3, 12)]},
        )

    def attachment(self, thread_id: str | None) -> Attachment:
        """Attachment metadata: a PDF, or an image with its preview URL."""
        attachment_id = new_id("atc")
        if self.random.random() < 0.5:
            return FileAttachment(
                id=attachment_id,
                name="report.pdf",
                mime_type="application/pdf",
                thread_id=thread_id,
            )
        return ImageAttachment(
            id=attachment_id,
            name="photo.png",
            mime_type="image/png",
            thread_id=thread_id,
            preview_url=AnyUrl(f"https://files.example.com/preview/{attachment_id}"),
        )

    def turn_items(self, thread_id: str) -> list[ThreadItem]:
        """What one turn adds: a user message, then an answer, a widget and a workflow."""
        return [
            self.user_message(thread_id),
            self.assistant_message(thread_id),
            self.widget(thread_id),
            self.workflow(thread_id),
        ]

    def user_message(self, thread_id: str) -> UserMessageItem:
        """A question of 0.2-2 KB of text, with an attachment one time in four."""
        attachments = [self.attachment(thread_id)] if self.random.random() < 0.25 else []
        return UserMessageItem(
            id=new_id("msg"),
            thread_id=thread_id,
            created_at=now(),
            content=[UserMessageTextContent(text=self.text(200, 2000))],
            attachments=attachments,
            inference_options=InferenceOptions(model="gpt-x"),
        )

    def assistant_message(self, thread_id: str) -> AssistantMessageItem:
        """An answer of 0.8-19 KB of text citing a few web sources."""
        annotations = [
            Annotation(source=URLSource(title=self.text(10, 60), url=f"https://example.com/{n}"))
            for n in range(self.random.randint(0, 4))
        ]
        content = AssistantMessageContent(text=self.text(800, 19_000), annotations=annotations)
        return AssistantMessageItem(
            id=new_id("msg"), thread_id=thread_id, created_at=now(), content=[content]
        )

    def widget(self, thread_id: str) -> WidgetItem:
        """A card with a title and 3-40 rows of text and badges (1-8 KB)."""
        rows = [
            Row(children=[Text(value=self.text(20, 120)), Badge(label=self.text(3, 12))])
            for _ in range(self.random.randint(3, 40))
        ]
        card = Card(children=[Title(value=self.text(10, 40)), *rows])
        return WidgetItem(
            id=new_id("wdg"),
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
            id=new_id("wf"),
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
    browse: dict[str, str] = field(default_factory=lambda: BROWSE)
    """The tenant whose history is read (the encrypted variant reads its own, sealed copy)."""

    async def step(self, store: BenchStore, record: Record) -> None:
        """Read the next page of threads and the next (older) page of the long thread."""
        threads = await record(
            "threads_page", store.load_threads(PAGE, self.threads_after, "desc", self.browse)
        )
        self.threads_after = threads.after
        items = await record(
            "items_page",
            store.load_thread_items(LONG_THREAD, self.items_after, PAGE, "desc", self.browse),
        )
        self.items_after = items.after


@dataclass
class SessionData:
    """What one session writes, built before it runs (so the stall probe sees only stores)."""

    turn_items: list[ThreadItem]
    scratch: ThreadMetadata
    scratch_item: ThreadItem
    attachment: Attachment

    @classmethod
    def build(cls, content: Content) -> SessionData:
        """New items, a scratch thread with one item, and an attachment of that thread."""
        scratch = content.thread()
        return cls(
            turn_items=content.turn_items(MAIN_THREAD),
            scratch=scratch,
            scratch_item=content.turn_items(scratch.id)[0],
            attachment=content.attachment(scratch.id),
        )


async def session(
    store: BenchStore,
    context: dict[str, str],
    data: SessionData,
    walk: HistoryWalk,
    record: Record,
) -> None:
    """One round of every operation, each timed: a turn, browsing, an attachment, a delete."""
    await turn(store, context, data.turn_items, record)
    await walk.step(store, record)
    scratch, attachment = data.scratch, data.attachment
    await store.save_thread(scratch, context)
    await store.add_thread_item(scratch.id, data.scratch_item, context)
    await record("save_attachment", store.save_attachment(attachment, context))
    await record("load_attachment", store.load_attachment(attachment.id, context))
    await record("delete_thread", store.delete_thread(scratch.id, context))


def timer(into: dict[str, list[float]]) -> Record:
    """A ``Record`` that appends each call's duration in seconds to ``into[call]``."""

    async def timed(call: str, work: Awaitable[Any]) -> Any:
        started = perf_counter()
        result = await work
        into.setdefault(call, []).append(perf_counter() - started)
        return result

    return timed


SESSION_CALLS = (
    "save_thread",
    "add_thread_item",
    "load_thread",
    "load_thread_items",
    "load_threads",
    "delete_thread",
)
"""The calls ``chat_session`` records, in the order the benchmarks report them."""


async def chat_session(store: Any, content: Content, tenant: str, record: Record) -> None:
    """A short chat session of a new thread: saved, two items added, read back, the tenant's
    threads listed, saved again renamed, deleted (the pooler and Citus benchmarks)."""
    context = {"tenant_id": tenant}
    thread = content.thread()
    await record("save_thread", store.save_thread(thread, context))
    for item in (content.user_message(thread.id), content.assistant_message(thread.id)):
        await record("add_thread_item", store.add_thread_item(thread.id, item, context))
    await record("load_thread", store.load_thread(thread.id, context))
    await record("load_thread_items", store.load_thread_items(thread.id, None, 20, "desc", context))
    await record("load_threads", store.load_threads(20, None, "desc", context))
    titled = thread.model_copy(update={"title": content.text(10, 60)})
    await record("save_thread", store.save_thread(titled, context))
    await record("delete_thread", store.delete_thread(thread.id, context))


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
    threads = [content.thread(T0 + timedelta(seconds=s)) for s in (0, 1, 1)]
    main = threads[0].id
    offsets = [0, 1, 1, 2, 3, 3, 4]
    items = [
        item.model_copy(update={"created_at": T0 + timedelta(seconds=offset)})
        for item, offset in zip(content.history(main, len(offsets), T0), offsets, strict=True)
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
