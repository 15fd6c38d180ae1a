"""The conformance suite catches real bugs: each broken store below must fail it.

Every ``Broken*`` store is ``MemoryStore`` (the reference) with one method overridden to add
one realistic bug, the kind a SQL or cache-backed store gets wrong. Each case runs the whole
``chatkit_stores.testing.StoreTests`` suite against its store in a nested pytest session
(``pytester``) and asserts that the run fails, and that among the failures is the test that
names the broken behaviour, with the expected message. ``MemoryStore`` itself passes the same
run (the control), in pytest-asyncio's auto mode and in strict mode, the default for users.

The table ``CAUGHT`` is the documentation of what the suite protects. Four of its bugs (a full
last page claiming more, a loaded model aliased, a thread list dropping metadata, a cursor from
another thread) first passed the suite; the assertions that catch them were added because of
this file.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from chatkit.store import NotFoundError, default_generate_id
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata

# Imported here, not only in the nested sessions: pytester drops the modules a nested session
# imports, and importing the suite (chatkit's models, hypothesis) again per run takes seconds.
import chatkit_stores.testing  # noqa: F401
from chatkit_stores.base import make_page, naive_utc, thread_metadata
from chatkit_stores.memory import MemoryStore

pytest_plugins = ["pytester"]

Ctx = Any

# --------------------------------------------------------------------------------------------
# Broken stores: one realistic bug each.
# --------------------------------------------------------------------------------------------


class BrokenThreadLoadIgnoresTenant(MemoryStore[Ctx]):
    """``SELECT ... WHERE id = ?`` without ``AND tenant = ?``: any tenant's thread loads."""

    async def load_thread(self, thread_id: str, context: Ctx) -> ThreadMetadata:
        for (_tenant, stored_id), row in self._threads.items():
            if stored_id == thread_id:
                return row.model.model_copy(deep=True)
        raise NotFoundError(f"Thread {thread_id} not found")


class BrokenItemListTrustsThreadId(MemoryStore[Ctx]):
    """Items are listed for the thread's owner, not the caller: a thread id is enough to read."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        owner = next(
            (tenant for tenant, stored_id in self._threads if stored_id == thread_id), None
        )
        if owner is not None:
            context = {"tenant_id": owner}
        return await super().load_thread_items(thread_id, after, limit, order, context)


class BrokenAttachmentLoadIgnoresTenant(MemoryStore[Ctx]):
    """Attachments load by id alone: a user adopts another tenant's file by sending its id."""

    async def load_attachment(self, attachment_id: str, context: Ctx) -> Attachment:
        for (_tenant, stored_id), row in self._attachments.items():
            if stored_id == attachment_id:
                return row.model.model_copy(deep=True)
        raise NotFoundError(f"Attachment {attachment_id} not found")


class BrokenPageSkipsItemAfterCursor(MemoryStore[Ctx]):
    """Off by one: the page after a cursor starts one item too late (``OFFSET index + 2``)."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        if after is None:
            return await super().load_thread_items(thread_id, after, limit, order, context)
        page = await super().load_thread_items(thread_id, after, limit + 2, order, context)
        return make_page(page.data[1:], limit)


class BrokenHasMoreNeverTrue(MemoryStore[Ctx]):
    """``LIMIT n`` instead of ``n + 1``: has_more is never set, clients see only page one."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        page = await super().load_thread_items(thread_id, after, limit, order, context)
        return Page(data=page.data, has_more=False, after=None)


class BrokenDescIgnored(MemoryStore[Ctx]):
    """``ORDER BY created_at`` hard-coded: ``order="desc"`` is validated, then ignored."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        self.page_size(limit, order)
        return await super().load_thread_items(thread_id, after, limit, "asc", context)


class BrokenItemUpdateMovesToEnd(MemoryStore[Ctx]):
    """Update as DELETE + INSERT (SQLite ``INSERT OR REPLACE``): the item gets a new place."""

    async def save_item(self, thread_id: str, item: ThreadItem, context: Ctx) -> None:
        self._items.pop((self.tenant_of(context), thread_id, item.id), None)
        await super().save_item(thread_id, item, context)


class BrokenThreadUpdateMovesToEnd(MemoryStore[Ctx]):
    """Same for threads: renaming a thread moves it in the thread list."""

    async def save_thread(self, thread: ThreadMetadata, context: Ctx) -> None:
        self._threads.pop((self.tenant_of(context), thread.id), None)
        await super().save_thread(thread, context)


class BrokenTimezoneDroppedOnLoad(MemoryStore[Ctx]):
    """A ``TIMESTAMP WITHOUT TIME ZONE`` column: aware datetimes come back naive UTC."""

    async def load_item(self, thread_id: str, item_id: str, context: Ctx) -> ThreadItem:
        item = await super().load_item(thread_id, item_id, context)
        return item.model_copy(update={"created_at": naive_utc(item.created_at)})


class BrokenDeleteThreadKeepsItems(MemoryStore[Ctx]):
    """delete_thread forgets the cascade to items: deleted conversations stay readable."""

    async def delete_thread(self, thread_id: str, context: Ctx) -> None:
        tenant = self.tenant_of(context)
        self._threads.pop((tenant, thread_id), None)
        for key, attachment in list(self._attachments.items()):
            if key[0] == tenant and attachment.thread_id == thread_id:
                del self._attachments[key]


class BrokenUnknownCursorRestarts(MemoryStore[Ctx]):
    """A cursor naming nothing is treated as no cursor: the client loops over page one."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        try:
            return await super().load_thread_items(thread_id, after, limit, order, context)
        except NotFoundError:
            return await super().load_thread_items(thread_id, None, limit, order, context)


class BrokenRetryDuplicatesItem(MemoryStore[Ctx]):
    """A plain INSERT with no unique key on (thread, id): a retried add shows the item twice."""

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Ctx) -> None:
        key = (self.tenant_of(context), thread_id, item.id)
        if key in self._items:
            key = (*key, f"row {len(self._items)}")  # type: ignore[assignment]
        self._upsert(self._items, key, item.created_at, item.model_copy(deep=True))


class BrokenLimitBelowOneAccepted(MemoryStore[Ctx]):
    """``limit=0`` or ``-1`` is clamped to 1 instead of rejected with ValueError."""

    def page_size(self, limit: int, order: str) -> int:
        return super().page_size(max(limit, 1), order)


class BrokenHugeLimitRejected(MemoryStore[Ctx]):
    """A limit over ``max_page_size`` raises instead of being clamped (a client can send one)."""

    def page_size(self, limit: int, order: str) -> int:
        if limit > self.max_page_size:
            raise ValueError(f"limit {limit} exceeds max_page_size {self.max_page_size}")
        return super().page_size(limit, order)


class BrokenSaveKeepsReference(MemoryStore[Ctx]):
    """The store keeps the caller's object: changing it after save_thread changes the store."""

    async def save_thread(self, thread: ThreadMetadata, context: Ctx) -> None:
        await super().save_thread(thread, context)
        self._threads[(self.tenant_of(context), thread.id)].kept = thread_metadata(thread)


# Bugs found missing from the suite by this file, and added to it.


class BrokenHasMoreOnFullLastPage(MemoryStore[Ctx]):
    """``has_more = len(rows) >= limit``: an exactly full last page claims more, then an empty
    page follows (an extra round trip, and a "load more" that loads nothing)."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        page = await super().load_thread_items(thread_id, after, limit, order, context)
        if len(page.data) == limit and not page.has_more:
            return Page(data=page.data, has_more=True, after=page.data[-1].id)
        return page


class BrokenLoadReturnsReference(MemoryStore[Ctx]):
    """load_thread returns the stored object itself: a caller's change sticks without a save."""

    async def load_thread(self, thread_id: str, context: Ctx) -> ThreadMetadata:
        row = self._threads.get((self.tenant_of(context), thread_id))
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return row.model


class BrokenThreadListDropsMetadata(MemoryStore[Ctx]):
    """The thread list selects only id, title and created_at: metadata and status are lost."""

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Ctx
    ) -> Page[ThreadMetadata]:
        page = await super().load_threads(limit, after, order, context)
        data = [ThreadMetadata(id=t.id, title=t.title, created_at=t.created_at) for t in page.data]
        return Page(data=data, has_more=page.has_more, after=page.after)


class BrokenCursorFromAnotherThread(MemoryStore[Ctx]):
    """Keyset pagination that looks the cursor row up without the thread filter: an item id
    of another thread is accepted as a cursor instead of raising NotFoundError."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Ctx
    ) -> Page[ThreadItem]:
        tenant = self.tenant_of(context)
        size = self.page_size(limit, order)
        rows = sorted(
            (row for key, row in self._items.items() if key[:2] == (tenant, thread_id)),
            key=lambda row: row.place,
            reverse=order == "desc",
        )
        if after is not None:
            at = next(
                (
                    row.place
                    for key, row in self._items.items()
                    if (key[0], key[2]) == (tenant, after)
                ),
                None,
            )
            if at is None:
                raise NotFoundError(f"Cursor {after} names nothing in this list")
            rows = [row for row in rows if (row.place > at if order == "asc" else row.place < at)]
        return make_page([row.model.model_copy(deep=True) for row in rows[: size + 1]], size)


class BrokenDefaultChatKitIds(MemoryStore[Ctx]):
    """openai-chatkit's default generator: 8 hex digits, a collision likely within ~77,000."""

    def generate_thread_id(self, context: Ctx) -> str:
        return default_generate_id("thread")

    def generate_item_id(self, item_type: Any, thread: ThreadMetadata, context: Ctx) -> str:
        return default_generate_id(item_type)


class BrokenIdsWithoutPrefix(MemoryStore[Ctx]):
    """Ids from ``uuid4()`` alone: plenty of bits, but no ``thr_``/``msg_`` prefix."""

    def generate_thread_id(self, context: Ctx) -> str:
        return str(uuid.uuid4())


class BrokenDeleteThreadKeepsAttachments(MemoryStore[Ctx]):
    """delete_thread forgets the attachments' metadata of the thread."""

    async def delete_thread(self, thread_id: str, context: Ctx) -> None:
        kept = dict(self._attachments)
        await super().delete_thread(thread_id, context)
        self._attachments.update(kept)


# --------------------------------------------------------------------------------------------
# What the suite protects: broken store -> the failing test -> its failure message.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bug:
    """A broken store and how the suite must report it: a failed test and its message."""

    store: type[MemoryStore[Ctx]]
    test: str
    """A substring of the failing test's node id (name and parameters)."""
    message: str
    """A substring of that test's failure report."""


def case(store: type[MemoryStore[Ctx]], test: str, message: str) -> Any:
    return pytest.param(Bug(store, test, message), id=store.__name__[6:])


CAUGHT = [
    # Tenant isolation.
    case(
        BrokenThreadLoadIgnoresTenant, "test_other_tenant_sees_nothing", "thread must look missing"
    ),
    case(BrokenItemListTrustsThreadId, "test_other_tenant_sees_nothing", "must look empty"),
    case(BrokenAttachmentLoadIgnoresTenant, "test_foreign_attachment_refused", "must not adopt"),
    # Pagination and order.
    case(BrokenPageSkipsItemAfterCursor, "test_items_paginate[1-asc]", "lost or repeated"),
    case(BrokenHasMoreNeverTrue, "test_items_paginate[1-asc]", "lost or repeated"),
    case(BrokenHasMoreOnFullLastPage, "test_items_paginate", "the next page is empty"),
    case(BrokenCursorFromAnotherThread, "test_unknown_cursor", "naming another thread's item"),
    case(BrokenDescIgnored, "test_items_paginate[1-desc]", "insertion order (desc)"),
    case(BrokenUnknownCursorRestarts, "test_unknown_cursor", "never restart from the first page"),
    case(BrokenLimitBelowOneAccepted, "test_bad_arguments", "limit=0 must raise ValueError"),
    case(BrokenHugeLimitRejected, "test_huge_limit", "exceeds max_page_size"),
    # Upserts keep their place; retries are idempotent.
    case(BrokenItemUpdateMovesToEnd, "test_save_item_keeps_position", "must keep its place"),
    case(BrokenThreadUpdateMovesToEnd, "test_save_thread_keeps_position", "must not move it"),
    case(BrokenRetryDuplicatesItem, "test_add_is_idempotent", "must not duplicate it"),
    # Round trips and cascades.
    case(BrokenTimezoneDroppedOnLoad, "test_item_timestamps[offset]", "with timezone"),
    case(BrokenDeleteThreadKeepsItems, "test_delete_cascades", "must delete the thread's items"),
    case(BrokenSaveKeepsReference, "test_saved_model_is_not_aliased", "keep a copy"),
    case(BrokenLoadReturnsReference, "test_loaded_model_is_not_aliased", "return a copy"),
    case(BrokenThreadListDropsMetadata, "test_thread_round_trip", "exactly as saved"),
    # Policies: ids.
    case(BrokenDefaultChatKitIds, "test_generated_id_entropy", "about 32 random bits"),
    case(BrokenIdsWithoutPrefix, "test_generated_id_prefixes", "lacks ChatKit's 'thr_' prefix"),
    case(BrokenDeleteThreadKeepsAttachments, "test_delete_removes_attachments", "attachments"),
]


# --------------------------------------------------------------------------------------------
# Running the suite in a nested pytest session.
# --------------------------------------------------------------------------------------------

SUITE = """
from typing import Any

import pytest
import pytest_asyncio

from chatkit_stores.testing import Capabilities, StoreTests


class TestStoreUnderTest(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, store_class: Any) -> Any:
        yield store_class()

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        return {capabilities}
"""

# The hypothesis state machine (if the suite has one) is slow and tested elsewhere.
SELECT = "not stateful"


@dataclass
class Run:
    """The outcome of one nested run of the suite."""

    ret: int
    passed: int
    failures: list[tuple[str, str]]
    """(node id, failure report) of every failed test, setup or collection."""

    def describe(self) -> str:
        lines = [f"exit {self.ret}, {self.passed} passed, {len(self.failures)} failed:"]
        lines += [f"  {nodeid}: {_last_line(report)}" for nodeid, report in self.failures]
        return "\n".join(lines)


def run_suite(
    pytester: pytest.Pytester,
    store: type[MemoryStore[Ctx]],
    mode: str,
    capabilities: str = "Capabilities(durability=False)",
    select: str = SELECT,
) -> Run:
    """Run ``StoreTests`` against ``store`` in a nested session in asyncio ``mode``."""
    pytester.makepyfile(test_conformance=SUITE.format(capabilities=capabilities))

    @pytest.fixture
    def store_class() -> type[MemoryStore[Ctx]]:
        return store

    plugin = ModuleType("store_under_test")  # pytest reads fixtures off modules and classes
    plugin.store_class = store_class  # type: ignore[attr-defined]

    # pytester's directory has no ini file: set the options the project's pyproject would.
    reprec = pytester.inline_run(
        "-p",
        "no:cacheprovider",
        "-q",
        "-k",
        select,
        "-o",
        f"asyncio_mode={mode}",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-W",
        "ignore:Direct usage of named widget classes is deprecated:DeprecationWarning",
        plugins=[plugin],
    )
    passed, _skipped, _failed = reprec.listoutcomes()
    failures = [(r.nodeid, r.longreprtext) for r in reprec.getfailures()]
    return Run(int(reprec.ret), len(passed), failures)


def _last_line(report: str) -> str:
    lines = [line for line in report.splitlines() if line.startswith("E ")]
    return lines[-1] if lines else (report.splitlines() or [""])[-1]


def _matching(failures: Sequence[tuple[str, str]], bug: Bug) -> list[str]:
    return [nodeid for nodeid, report in failures if bug.test in nodeid and bug.message in report]


# --------------------------------------------------------------------------------------------
# The tests.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_reference_store_passes(pytester: pytest.Pytester, mode: str) -> None:
    """The control: MemoryStore passes the very run every broken store fails, in both modes."""
    run = run_suite(pytester, MemoryStore, mode)
    assert run.ret == 0 and not run.failures, run.describe()
    assert run.passed >= 60, f"the suite barely ran: {run.describe()}"


@pytest.mark.parametrize("bug", CAUGHT)
def test_suite_catches_bug(pytester: pytest.Pytester, bug: Bug) -> None:
    """The suite fails for the broken store, naming the broken behaviour."""
    run = run_suite(pytester, bug.store, "auto")
    assert run.failures, f"{bug.store.__name__} passed the whole suite: {bug.store.__doc__}"
    assert _matching(run.failures, bug), (
        f"no failed test matches {bug.test!r} with {bug.message!r} in its report.\n"
        + run.describe()
    )


class BrokenAttachmentsBehindClampedLimit(BrokenAttachmentLoadIgnoresTenant):
    """A policy difference (``limit=0`` clamped, not refused) in front of a real bug (any
    tenant's attachment loads by id)."""

    def page_size(self, limit: int, order: str) -> int:
        return super().page_size(max(limit, 1), order)


def test_stateful_test_sees_past_a_policy_difference(pytester: pytest.Pytester) -> None:
    """With the policy turned off, the stateful test reports the real bug behind it."""
    policy = 'Capabilities.opt_out(argument_errors="clamps", durability="in memory")'
    run = run_suite(
        pytester, BrokenAttachmentsBehindClampedLimit, "auto", policy, select="stateful"
    )
    [(nodeid, report)] = run.failures
    assert "test_stateful_matches_the_reference_model" in nodeid, run.describe()
    assert "load_attachment" in report and "diverged from the reference model" in report, report
    assert "stateful test seed 0" in report, report
