"""A stateful property test: random operation sequences against the store and ``MemoryStore``.

A Hypothesis ``RuleBasedStateMachine`` applies each operation to the store under test and to a
fresh :class:`~chatkit_stores.memory.MemoryStore` (the reference model), and fails on the first
operation whose result or exception differs. After every write, what it may have changed is
read back from both stores. Ids come from tiny pools and timestamps from a handful of values,
so upserts, retries, cursors on deleted objects and ties in ``created_at`` happen all the time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import Page, Thread, ThreadItem
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    precondition,
    rule,
)

from ..base import naive_utc
from ..memory import MemoryStore
from . import models
from .capabilities import Capabilities
from .fixtures import Ctx, StoreFixtures, async_tests
from .models import T0

R = TypeVar("R")
Call = Callable[[Store[Any], Ctx], Awaitable[Any]]

SEED_ENV = "CHATKIT_STORES_STATEFUL_SEED"
"""Environment variable: the seed the stateful test draws its sequences from (default 0)."""

EXAMPLES_ENV = "CHATKIT_STORES_STATEFUL_EXAMPLES"
"""Environment variable: how many examples (operation sequences) the stateful test runs."""

DEFAULT_EXAMPLES = 10
DEFAULT_STEPS = 75
"""Few long sequences find more than many short ones: the state has time to build up."""

THREADS = ("thr0", "thr1", "thr2")
ITEMS = ("msg0", "msg1", "msg2", "msg3")
ATTACHMENTS = ("atc0", "atc1")
UNKNOWN = "nope"
"""A cursor that names nothing, in any list."""

_SECOND = timedelta(seconds=1)
_UTC = timezone.utc
STAMPS: dict[str, datetime] = {
    "t0": T0,
    "t0 utc": T0.replace(tzinfo=_UTC),  # the same instant as t0: a tie
    "t0+1us": T0 + timedelta(microseconds=1),
    "t1": T0 + _SECOND,
    # The same instant as t1, but its wall clock is the earliest of all.
    "t1 -08:00": (T0 + _SECOND).replace(tzinfo=_UTC).astimezone(timezone(timedelta(hours=-8))),
    # The earliest instant, but its wall clock is the latest of all.
    "t-1 +05:30": (T0 - _SECOND)
    .replace(tzinfo=_UTC)
    .astimezone(timezone(timedelta(hours=5, minutes=30))),
}
"""Creation times by name: few, so ties happen; naive and aware, in zones that reorder them."""

ITEM_KINDS = ("assistant_message", "user_message", "end_of_turn", "client_tool_call", "workflow")
_TEXT_KINDS = ("assistant_message", "user_message")
HUGE = 10**9
"""A limit larger than any page size (clients can send one)."""
MAX_PAGES = 50
"""Following ``after`` fails after this many pages (the lists are tiny)."""


def stateful_settings_default() -> settings:
    """The default ``settings`` of the stateful test: bounded, so the suite stays fast."""
    return settings(
        max_examples=DEFAULT_EXAMPLES,
        stateful_step_count=DEFAULT_STEPS,
        deadline=None,
        database=None,  # no example database written into the project under test
        # The explain phase reruns the failing case under a tracer: slow, and the message and
        # the shrunk steps already say what went wrong.
        phases=[phase for phase in Phase if phase is not Phase.explain],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def _int_from_env(name: str, *, positive: bool = False) -> int | None:
    """The integer the environment variable ``name`` holds; None when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or (positive and value < 1):
        raise ValueError(
            f"{name} must be {'a positive' if positive else 'an'} integer, got {raw!r}"
        )
    return value


def _skewed(values: Sequence[str]) -> st.SearchStrategy[str]:
    """Draw earlier values more often, so operations pile up on the same objects."""
    return st.sampled_from([v for i, v in enumerate(values) for _ in range(len(values) - i)])


# Strategies that depend on the machine (its tenants, what it holds) draw the machine first.
_tenant = st.runner().flatmap(lambda machine: machine.tenant_strategy)
_stored_item = st.runner().flatmap(lambda machine: st.sampled_from(machine.stored_items()))
_thread = _skewed(THREADS)
_maybe_thread = st.none() | _thread
_item = st.sampled_from(ITEMS)
_attachment = st.sampled_from(ATTACHMENTS)
_stamp = st.runner().flatmap(lambda machine: machine.stamp_strategy)
_kind = st.sampled_from(ITEM_KINDS)
_text = st.sampled_from(("hi", "hello"))
_limit = st.sampled_from((1, 2, 3, HUGE))
_order = st.sampled_from(("asc", "desc"))


# running and comparing


class _Bridge:
    """Runs coroutines on the test's event loop from the thread that runs Hypothesis."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stopped = threading.Event()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run ``coro`` on the loop and wait for its result; give up once the test is over."""
        if self.stopped.is_set():
            coro.close()
            raise RuntimeError("the stateful test was stopped")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        while not future.done():
            concurrent.futures.wait([future], timeout=0.2)
            if self.stopped.is_set() or self.loop.is_closed():
                future.cancel()
                raise RuntimeError("the stateful test was stopped while a store call ran")
        return future.result()


@dataclass(frozen=True)
class _Config:
    store: Store[Any]
    make_context: Callable[[], Ctx]
    bridge: _Bridge
    capabilities: Capabilities


@dataclass(frozen=True)
class _PageView:
    """A page as compared: ids, has_more, after and the models; shown with short ids."""

    ids: tuple[str, ...]
    has_more: bool
    after: str | None
    data: tuple[Any, ...]
    short: Callable[[str | None], str | None] = field(compare=False)

    def __repr__(self) -> str:
        ids = [self.short(i) for i in self.ids]
        return f"Page(ids={ids}, has_more={self.has_more}, after={self.short(self.after)!r})"


@dataclass(frozen=True)
class _Outcome:
    """What one call did: returned ``value`` or raised ``error``."""

    value: Any = None
    error: BaseException | None = None

    @property
    def kind(self) -> str:
        if self.error is None:
            return "returned"
        for known in (NotFoundError, ValueError):
            if isinstance(self.error, known):
                return f"raised {known.__name__}"
        return f"raised {type(self.error).__name__}"

    def same_as(self, other: _Outcome) -> bool:
        if self.kind != other.kind:
            return False
        return self.error is not None or bool(self.value == other.value)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.kind}: {self.error!r}"
        return f"returned {self.value!r}"


async def _outcome(
    awaitable: Awaitable[Any], catch: tuple[type[BaseException], ...], view: Callable[[Any], Any]
) -> _Outcome:
    try:
        value = await awaitable
    except catch as error:
        return _Outcome(error=error)
    return _Outcome(value=view(value))


async def _walk(
    store: Store[Any], thread_id: str | None, limit: int, order: str, context: Ctx
) -> list[Page[Any]]:
    """Every page of the threads (``thread_id=None``) or of a thread's items, following after."""
    pages: list[Page[Any]] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        if thread_id is None:
            page: Page[Any] = await store.load_threads(limit, after, order, context)
        else:
            page = await store.load_thread_items(thread_id, after, limit, order, context)
        pages.append(page)
        if not page.has_more:
            return pages
        after = page.after
    raise AssertionError(f"pagination did not end after {MAX_PAGES} pages (has_more stayed True)")


def _difference(got: Any, expected: Any) -> str:
    """Point at the first differing model when two pages (or walks) have the same ids."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        pairs = list(zip(got, expected, strict=True))
    elif isinstance(got, _PageView) and isinstance(expected, _PageView):
        pairs = [(got, expected)]
    for mine, theirs in pairs:
        if not (isinstance(mine, _PageView) and isinstance(theirs, _PageView)):
            continue
        if mine.ids != theirs.ids:
            return ""
        for a, b in zip(mine.data, theirs.data, strict=True):
            if a != b:
                return f"\n  first differing model:\n    store:     {a!r}\n    reference: {b!r}"
    return ""


def _build_item(kind: str, thread_id: str, item_id: str, at: datetime, text: str) -> ThreadItem:
    builder = models.ITEM_BUILDERS[kind]
    item = builder(thread_id, at, text=text) if kind in _TEXT_KINDS else builder(thread_id, at)
    return item.model_copy(update={"id": item_id})


class StoreMachine(RuleBasedStateMachine):
    """Applies each rule to the store under test and to a ``MemoryStore``; results must agree.

    After each write, what it may have changed is read back from both stores. Use
    :meth:`bind` to make a machine class for one store.
    """

    config: ClassVar[_Config]

    @classmethod
    def bind(cls, config: _Config) -> type[StoreMachine]:
        """Return a subclass that tests ``config.store``."""
        return type(cls.__name__, (cls,), {"config": config})

    def __init__(self) -> None:
        super().__init__()
        config = self.config
        # Fresh state per example: new tenants in the store under test, ids no earlier example
        # used, and a new reference model whose tenants are the labels.
        self.suffix = uuid.uuid4().hex[:12]
        self.labels = ("A", "B")
        self.tenant_strategy = _skewed(self.labels)
        # Without naive_is_utc, naive and aware timestamps never meet in one list.
        naive_ok = config.capabilities.naive_is_utc
        stamps = [name for name, at in STAMPS.items() if naive_ok or at.tzinfo is not None]
        self.stamp_strategy = st.sampled_from(stamps)
        self.contexts = {label: config.make_context() for label in self.labels}
        self.reference: MemoryStore[Any] = _Reference(config.capabilities)
        self.reference_contexts = {label: {"user_id": label} for label in self.labels}
        self.last_step = ""

    # ids and views

    def _id(self, name: str, owner: str) -> str:
        """The id of pool name ``name`` written by tenant ``owner``: shared by the tenants
        when ids are scoped per tenant, else one per tenant (global ids never meet)."""
        if self.config.capabilities.tenant_id_scopes:
            return f"{name}_{self.suffix}"
        return f"{name}.{owner}_{self.suffix}"

    def _item_id(self, name: str, thread: str, owner: str) -> str:
        """The id of item ``name`` of ``thread``: with global ids, one per thread as well."""
        if self.config.capabilities.tenant_id_scopes:
            return self._id(name, owner)
        return self._id(f"{name}@{thread}", owner)

    def _cursor(self, name: str | None, owner: str) -> str | None:
        return None if name is None else self._id(name, owner)

    def _short(self, full: str | None) -> str | None:
        """The pool name of an id of this example (other ids are returned unchanged)."""
        end = f"_{self.suffix}"
        if full is None or not full.endswith(end):
            return full
        return full[: -len(end)].partition(".")[0]

    def _created_at(self, tenant: str, key: tuple[str, ...], drawn: datetime) -> datetime:
        """An object already stored keeps its created_at (ChatKit never changes it)."""
        table: Any = self.reference._items if len(key) == 2 else self.reference._threads
        row = table.get((tenant, *key))
        return drawn if row is None else row.model.created_at

    def _threads_view(self, value: Any) -> Any:
        """Thread lists: exact, or blind to the order within a created_at tie when re-saved
        threads need not keep their place."""
        if self.config.capabilities.thread_resave_keeps_position:
            return self._view(value)
        pages = value if isinstance(value, list) else [value]
        groups: dict[datetime, list[Any]] = {}
        for obj in (obj for page in pages for obj in page.data):
            groups.setdefault(naive_utc(obj.created_at), []).append(obj)
        return (
            [len(page.data) for page in pages],
            [sorted(group, key=lambda obj: obj.id) for group in groups.values()],
        )

    def _view(self, value: Any) -> Any:
        if isinstance(value, Page):
            return _PageView(
                ids=tuple(obj.id for obj in value.data),
                has_more=value.has_more,
                after=value.after,
                data=tuple(value.data),
                short=self._short,
            )
        if isinstance(value, list):
            return [self._view(v) for v in value]
        return value

    def stored_items(self) -> list[tuple[str, str, str]]:
        """(tenant, thread, item) of every item the reference model holds."""
        keys = self.reference._items  # the reference is this package's own MemoryStore
        return sorted(
            (tenant, str(self._short(thread)), str(self._short(item)).partition("@")[0])
            for tenant, thread, item in keys
        )

    def _stored(self, tenant: str, thread: str, item: str) -> ThreadItem:
        key = (tenant, self._id(thread, tenant), self._item_id(item, thread, tenant))
        return self.reference._items[key].model.model_copy(deep=True)

    def _check(
        self,
        tenant: str,
        operation: str,
        arguments: dict[str, Any],
        call: Call,
        view: Callable[[Any], Any] | None = None,
        *,
        read_back: bool = False,
        cursor: bool = False,
    ) -> None:
        """Run ``call`` on both stores; fail unless they return equal values or raise alike.

        ``read_back`` marks a check of the state right after the last step; ``cursor`` a call
        with an ``after`` cursor, where any exception matches NotFoundError unless the policy
        ``unknown_cursor_not_found`` is on.
        """
        chosen = view or self._view

        async def both() -> tuple[_Outcome, _Outcome]:
            context = self.reference_contexts[tenant]
            expected = await _outcome(
                call(self.reference, context), (NotFoundError, ValueError), chosen
            )
            got = await _outcome(
                call(self.config.store, self.contexts[tenant]), (Exception,), chosen
            )
            return expected, got

        expected, got = self.config.bridge.run(both())
        args = ", ".join(f"{k}={v!r}" for k, v in {"tenant": tenant, **arguments}.items())
        step = f"{operation}({args})"
        lenient = cursor and not self.config.capabilities.unknown_cursor_not_found
        if lenient and isinstance(expected.error, NotFoundError) and got.error is not None:
            got = expected
        if not got.same_as(expected):
            when = f", read back right after {self.last_step}" if read_back else ""
            message = (
                f"{step} diverged from the reference model (MemoryStore){when}:\n"
                f"  store under test: {got.describe()}\n"
                f"  reference model:  {expected.describe()}"
                + _difference(got.value, expected.value)
            )
            raise AssertionError(message) from got.error
        if not read_back:
            self.last_step = step

    def _call(self, tenant: str, method: str, writer: str | None = None, **shown: Any) -> None:
        """``_check`` of ``store.<method>`` called with the ``shown`` arguments, in their order,
        pool names made into ids: ``thread``, ``attachment``, ``item``, and ``after`` (an item
        when a thread is shown, else a thread). With ``writer``, a read-back of that tenant's
        write (the ids are the writer's).
        """
        owner = writer or tenant
        thread: Any = shown.get("thread")
        args: list[Any] = []
        for name, value in shown.items():
            if value is None or name not in ("thread", "attachment", "item", "after"):
                args.append(value)
            elif name == "item" or (name == "after" and thread is not None):
                args.append(self._item_id(value, thread, owner))
            else:
                args.append(self._id(value, owner))
        self._check(
            tenant,
            method,
            shown,
            lambda s, c: getattr(s, method)(*args, c),
            read_back=writer is not None,
            cursor=shown.get("after") is not None,
        )

    # read-backs: after each write, what it may have changed. The writer's tenant gets the
    # full check; the other tenant the cheapest one that shows a write that leaked into it.

    def _read_thread(self, writer: str, thread: str) -> None:
        for tenant in self.labels:
            self._call(tenant, "load_thread", writer, thread=thread)
        self._list_threads(writer, read_back=True)

    def _list_threads(self, tenant: str, read_back: bool = False) -> None:
        self._check(
            tenant,
            "every page of load_threads",
            {"limit": HUGE, "order": "asc"},
            lambda s, c: _walk(s, None, HUGE, "asc", c),
            self._threads_view,
            read_back=read_back,
        )

    def _read_items(self, writer: str, thread: str, item: str | None) -> None:
        """The thread's items (both orders for the writer); the item in the other tenant."""
        for tenant in self.labels:
            mine = tenant == writer
            for order in ("asc", "desc") if mine and item is not None else ("asc",):
                self._call(
                    tenant,
                    "load_thread_items",
                    writer,
                    thread=thread,
                    after=None,
                    limit=HUGE,
                    order=order,
                )
            if item is not None and not mine:
                self._call(tenant, "load_item", writer, thread=thread, item=item)

    def _read_attachment(self, writer: str, attachment: str) -> None:
        for tenant in self.labels:
            self._call(tenant, "load_attachment", writer, attachment=attachment)

    # the rules

    @rule()
    def list_threads(self) -> None:
        """load_threads (every page) in every tenant; changes nothing.

        A rule without arguments sorts first, so it is what Hypothesis turns leftover steps
        into while shrinking; this one is cheap, and plainly harmless in a printed example.
        """
        for tenant in self.labels:
            self._list_threads(tenant)

    @rule(
        tenant=_tenant,
        thread=_thread,
        created_at=_stamp,
        title=st.sampled_from(("A", None)),
        full_thread=st.booleans(),
    )
    def save_thread(
        self, tenant: str, thread: str, created_at: str, title: str | None, full_thread: bool
    ) -> None:
        """save_thread of metadata, or of a full Thread with an item (as ChatKit streams it)."""
        at = self._created_at(tenant, (self._id(thread, tenant),), STAMPS[created_at])
        model = models.thread(self._id(thread, tenant), at, title)
        if full_thread:
            item = models.end_of_turn(model.id, at)
            model = Thread(**model.model_dump(), items=Page[ThreadItem](data=[item]))
        self._check(
            tenant,
            "save_thread",
            {"thread": thread, "created_at": at, "title": title, "full_thread": full_thread},
            lambda s, c: s.save_thread(model.model_copy(deep=True), c),
        )
        self._read_thread(tenant, thread)

    @rule(tenant=_tenant, thread=_thread)
    def load_thread(self, tenant: str, thread: str) -> None:
        """load_thread: the thread, or NotFoundError."""
        self._call(tenant, "load_thread", thread=thread)

    @precondition(lambda self: self.config.capabilities.thread_resave_keeps_position)
    @rule(
        tenant=_tenant, limit=_limit, after=st.sampled_from((None, *THREADS, UNKNOWN)), order=_order
    )
    def load_threads(self, tenant: str, limit: int, after: str | None, order: str) -> None:
        """load_threads: one page of the tenant's threads."""
        self._call(tenant, "load_threads", limit=limit, after=after, order=order)

    @rule(tenant=_tenant, thread=_thread)
    def delete_thread(self, tenant: str, thread: str) -> None:
        """delete_thread: the thread, its items and its attachments go."""
        self._call(tenant, "delete_thread", thread=thread)
        self._read_thread(tenant, thread)
        self._read_items(tenant, thread, None)
        for attachment in ATTACHMENTS:
            self._read_attachment(tenant, attachment)

    @rule(tenant=_tenant, thread=_thread, item=_item, kind=_kind, created_at=_stamp, text=_text)
    def add_thread_item(
        self, tenant: str, thread: str, item: str, kind: str, created_at: str, text: str
    ) -> None:
        """add_thread_item of a new item, or of an id the thread already has."""
        self._write_item("add_thread_item", tenant, thread, item, kind, STAMPS[created_at], text)

    @rule(tenant=_tenant, thread=_thread, item=_item, kind=_kind, created_at=_stamp, text=_text)
    def save_item(
        self, tenant: str, thread: str, item: str, kind: str, created_at: str, text: str
    ) -> None:
        """save_item: insert an item never added, or replace one (with any created_at)."""
        self._write_item("save_item", tenant, thread, item, kind, STAMPS[created_at], text)

    @precondition(
        lambda self: self.config.capabilities.insert_if_absent_adds and bool(self.stored_items())
    )
    @rule(key=_stored_item)
    def retry_add_thread_item(self, key: tuple[str, str, str]) -> None:
        """add_thread_item again of a stored item, unchanged (a retry)."""
        tenant, thread, item = key
        stored = self._stored(tenant, thread, item)
        self._check(
            tenant,
            "retry of a stored item: add_thread_item",
            {"thread": thread, "item": item},
            lambda s, c: s.add_thread_item(
                self._id(thread, tenant), stored.model_copy(deep=True), c
            ),
        )
        self._read_items(tenant, thread, item)

    @precondition(lambda self: bool(self.stored_items()))
    @rule(key=_stored_item, kind=_kind, text=_text)
    def update_item(self, key: tuple[str, str, str], kind: str, text: str) -> None:
        """save_item of a stored item with new content and the same created_at."""
        tenant, thread, item = key
        at = self._stored(tenant, thread, item).created_at
        self._write_item("update of a stored item: save_item", tenant, thread, item, kind, at, text)

    def _write_item(
        self,
        operation: str,
        tenant: str,
        thread: str,
        item: str,
        kind: str,
        created_at: datetime,
        text: str,
    ) -> None:
        thread_id, item_id = self._id(thread, tenant), self._item_id(item, thread, tenant)
        write = "add_thread_item" if operation.endswith("add_thread_item") else "save_item"
        stored = (tenant, thread_id, item_id) in self.reference._items
        retry = write == "add_thread_item" and stored
        if retry and not self.config.capabilities.insert_if_absent_adds:
            return  # the suite never adds an id twice to a store without that policy
        created_at = self._created_at(tenant, (thread_id, item_id), created_at)
        model = _build_item(kind, thread_id, item_id, created_at, text)
        self._check(
            tenant,
            operation,
            {"thread": thread, "item": item, "kind": kind, "created_at": created_at, "text": text},
            lambda s, c: getattr(s, write)(thread_id, model.model_copy(deep=True), c),
        )
        self._read_items(tenant, thread, item)

    @rule(tenant=_tenant, thread=_thread, item=_item)
    def load_item(self, tenant: str, thread: str, item: str) -> None:
        """load_item: the item, or NotFoundError."""
        self._call(tenant, "load_item", thread=thread, item=item)

    @rule(
        tenant=_tenant,
        thread=_thread,
        after=st.sampled_from((None, *ITEMS, UNKNOWN)),
        limit=_limit,
        order=_order,
    )
    def load_thread_items(
        self, tenant: str, thread: str, after: str | None, limit: int, order: str
    ) -> None:
        """load_thread_items: one page of a thread's items."""
        self._call(
            tenant, "load_thread_items", thread=thread, after=after, limit=limit, order=order
        )

    @rule(tenant=_tenant, thread=_thread, item=_item)
    def delete_thread_item(self, tenant: str, thread: str, item: str) -> None:
        """delete_thread_item: the item goes; a missing one is a no-op."""
        self._call(tenant, "delete_thread_item", thread=thread, item=item)
        self._read_items(tenant, thread, None)

    @rule(tenant=_tenant, thread=_maybe_thread, limit=st.sampled_from((1, 2, 3)), order=_order)
    def walk_pages(self, tenant: str, thread: str | None, limit: int, order: str) -> None:
        """Every page of the threads (thread=None) or of a thread's items, following after."""
        thread_id = self._cursor(thread, tenant)
        view = self._threads_view if thread is None else self._view
        self._check(
            tenant,
            "every page of " + ("load_threads" if thread is None else "load_thread_items"),
            {"thread": thread, "limit": limit, "order": order},
            lambda s, c: _walk(s, thread_id, limit, order, c),
            view,
        )

    @precondition(lambda self: self.config.capabilities.argument_errors)
    @rule(
        tenant=_tenant,
        thread=_maybe_thread,
        arguments=st.sampled_from(((0, "asc"), (-1, "desc"), (10, "ASC"), (10, ""))),
    )
    def load_page_bad_arguments(
        self, tenant: str, thread: str | None, arguments: tuple[int, str]
    ) -> None:
        """A limit below 1 or an order other than asc/desc raises ValueError."""
        limit, order = arguments
        thread_id = self._cursor(thread, tenant)

        def call(s: Store[Any], c: Ctx) -> Awaitable[Page[Any]]:
            if thread_id is None:
                return s.load_threads(limit, None, order, c)
            return s.load_thread_items(thread_id, None, limit, order, c)

        self._check(
            tenant,
            "load_threads" if thread is None else "load_thread_items",
            {"thread": thread, "after": None, "limit": limit, "order": order},
            call,
        )

    @rule(
        tenant=_tenant,
        attachment=_attachment,
        kind=st.sampled_from(sorted(models.ATTACHMENT_BUILDERS)),
        thread=st.one_of(_thread, _thread, st.none()),  # mostly in a thread
    )
    def save_attachment(self, tenant: str, attachment: str, kind: str, thread: str | None) -> None:
        """save_attachment: insert or replace metadata, with or without a thread."""
        model = models.ATTACHMENT_BUILDERS[kind](
            self._id(attachment, tenant), self._cursor(thread, tenant)
        )
        self._check(
            tenant,
            "save_attachment",
            {"attachment": attachment, "kind": kind, "thread": thread},
            lambda s, c: s.save_attachment(model.model_copy(deep=True), c),
        )
        self._read_attachment(tenant, attachment)

    @rule(tenant=_tenant, attachment=_attachment)
    def load_attachment(self, tenant: str, attachment: str) -> None:
        """load_attachment: the metadata, or NotFoundError."""
        self._call(tenant, "load_attachment", attachment=attachment)

    @rule(tenant=_tenant, attachment=_attachment)
    def delete_attachment(self, tenant: str, attachment: str) -> None:
        """delete_attachment: the metadata goes; a missing one is a no-op."""
        self._call(tenant, "delete_attachment", attachment=attachment)
        self._read_attachment(tenant, attachment)


@async_tests
class StatefulTests(StoreFixtures):
    """Random operation sequences on the store give the same results as ``MemoryStore``.

    A Hypothesis state machine saves, loads, lists and deletes threads, items and attachments
    in two tenants, with ids from tiny pools (shared by both tenants when ids are scoped per
    tenant), and compares every result and exception with the reference model, which follows
    the same policies (``Capabilities``) as the store, so a policy difference never hides a
    contract bug. An object saved again keeps its ``created_at``, as in ChatKit.
    On a divergence the failure names the operation, its arguments and both results, and
    Hypothesis prints the shrunk sequence of steps that leads there.

    It is bounded so the suite stays fast: 10 examples of up to 75 steps. To run it longer,
    set the environment variable ``CHATKIT_STORES_STATEFUL_EXAMPLES`` to a number of examples
    (it overrides ``max_examples`` of whatever settings are in use), or override the
    ``stateful_settings`` fixture to return your own ``hypothesis.settings``::

        @pytest.fixture
        def stateful_settings(self) -> settings:
            return settings(stateful_settings_default(), max_examples=200)

    The examples come from a seed (``CHATKIT_STORES_STATEFUL_SEED``, default 0), printed with
    every failure: the same store always gets the same verdict, and another seed explores
    other sequences. The default settings keep no example database (``database=None``).
    Shrinking a failure replays hundreds of sequences,
    which takes a minute or two on a database backend. Every example uses new tenants from
    ``make_context`` and new ids, so one store fixture serves all examples.
    """

    @pytest.fixture
    def stateful_settings(self) -> settings:
        """The Hypothesis settings of the stateful test; override to run it longer."""
        return stateful_settings_default()

    async def test_stateful_matches_the_reference_model(
        self,
        store: Store[Any],
        make_context: Callable[[], Ctx],
        capabilities: Capabilities,
        stateful_settings: settings,
    ) -> None:
        """Random operation sequences on two tenants give the same results as MemoryStore."""
        chosen = stateful_settings
        examples = _int_from_env(EXAMPLES_ENV, positive=True)
        if examples is not None:
            chosen = settings(chosen, max_examples=examples)
        chosen_seed = _int_from_env(SEED_ENV) or 0
        bridge = _Bridge(asyncio.get_running_loop())
        machine = StoreMachine.bind(_Config(store, make_context, bridge, capabilities))
        test = seed(chosen_seed)(get_state_machine_test(machine, settings=chosen))
        try:
            # Hypothesis runs synchronously in a worker thread; store calls come back to this
            # loop, which the store (and its connection pool) is bound to.
            await asyncio.to_thread(test)
        except Exception as error:
            if sys.version_info >= (3, 11):
                error.add_note(
                    f"stateful test seed {chosen_seed}: the same seed replays the same "
                    f"sequences ({SEED_ENV}={chosen_seed})"
                )
            raise
        finally:
            bridge.stopped.set()


class _Reference(MemoryStore[Any]):
    """``MemoryStore`` following the store's policies where they change what is stored."""

    def __init__(self, capabilities: Capabilities) -> None:
        super().__init__()
        self.capabilities = capabilities

    async def delete_thread(self, thread_id: str, context: Any) -> None:
        """Delete as MemoryStore does; keep the attachments unless the policy removes them."""
        kept = dict(self._attachments)
        await super().delete_thread(thread_id, context)
        if not self.capabilities.thread_delete_removes_attachments:
            self._attachments.update(kept)
