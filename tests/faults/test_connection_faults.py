"""Many ChatKit-like writers while the database connections are cut, stalled and refused.

Each writer does what a ChatKit server does for a conversation: save a new thread, add user and
assistant items, save the thread again at the end of a response, sometimes delete it. A fault
task cuts every connection several times (every other time after stalling the traffic, so
every writer is caught mid-call), then refuses new connections for a while. Checked: calls
fail with a database-connection error, never hang; the same store recovers by itself; every
acknowledged write is there afterwards and nothing is half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from chatkit_stores import SQLStore
from chatkit_stores.testing import models

from .checks import (
    all_items,
    error_name,
    eventually,
    is_connection_error,
    is_sqlalchemy_connection_error,
    orphan_items,
    thread_exists,
)
from .conftest import SERVERS, Database, fresh_tables, server_database
from .proxy import FaultProxy, Refusal

WRITERS = 20
CUT_ROUNDS = 6
ACKS_BETWEEN_FAULTS = 60
REFUSED_CALLS = 10
CALL_TIMEOUT = 20.0
PHASE_TIMEOUT = 60.0
SEED = 7
POOL_CAPACITY = 15
"""SQLAlchemy's default pool_size + max_overflow: how many dead pooled connections can exist."""


@dataclass
class Round:
    """One fault: how it went, and how many calls started after the resume still failed."""

    kind: str
    in_flight: int = 0
    links_cut: int = 0
    failed: int = 0
    failed_after_resume: int = 0


@dataclass
class Workload:
    """The writers' ledger of acknowledged writes, and the fault bookkeeping."""

    store: SQLStore[Any]
    threads: dict[str, dict[str, str]] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    maybe_deleted: set[str] = field(default_factory=set)
    acked: int = 0
    failed: int = 0
    hung: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    untranslated: Counter[str] = field(default_factory=Counter)
    foreign: list[BaseException] = field(default_factory=list)
    in_flight: int = 0
    rounds: list[Round] = field(default_factory=list)
    healthy_since: float | None = 0.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def call(self, operation: Coroutine[Any, Any, None]) -> bool:
        """Run one store call with a deadline; record its outcome; True if acknowledged."""
        started, round_at_start = time.monotonic(), len(self.rounds)
        task = asyncio.ensure_future(operation)
        self.in_flight += 1
        await self._notify()
        try:
            done, _ = await asyncio.wait({task}, timeout=CALL_TIMEOUT)
        finally:
            self.in_flight -= 1
        if not done:
            self.hung += 1
            task.cancel()
            await asyncio.wait({task})
            return False
        error = task.exception()
        if error is None:
            self.acked += 1
        else:
            self.failed += 1
            self.errors[error_name(error)] += 1
            if not is_connection_error(error):
                self.foreign.append(error)
            elif not is_sqlalchemy_connection_error(error):
                self.untranslated[error_name(error)] += 1
            if self.rounds:
                self.rounds[-1].failed += 1
                healthy = self.healthy_since
                if round_at_start == len(self.rounds) and healthy and started >= healthy:
                    self.rounds[-1].failed_after_resume += 1
        await self._notify()
        return error is None

    async def writer(self, number: int) -> None:
        """Conversations until stopped; a failed call abandons the conversation."""
        rng = random.Random(SEED * 1000 + number)
        context = {"user_id": f"writer-{number % 5}"}
        store = self.store
        while not self.stop.is_set():
            thread = models.thread(created_at=datetime.now())
            if not await self.call(store.save_thread(thread, context)):
                continue
            self.threads[thread.id] = context
            complete = True
            for turn in range(rng.randint(1, 3)):
                for make in (models.user_message, models.assistant_message):
                    item = make(thread.id, datetime.now(), text=f"turn {turn}")
                    complete = await self.call(store.add_thread_item(thread.id, item, context))
                    if not complete:
                        break
                    self.items[item.id] = thread.id
                if not complete:
                    break
            if complete:
                thread.title = f"answered {rng.random():.6f}"
                await self.call(store.save_thread(thread, context))
            if rng.random() < 0.25:
                if await self.call(store.delete_thread(thread.id, context)):
                    self.deleted.add(thread.id)
                else:
                    self.maybe_deleted.add(thread.id)

    async def inject(self, proxy: FaultProxy) -> None:
        """Cut (every other time after a stall), then refuse; wait for progress in between."""
        for number in range(CUT_ROUNDS):
            await self.progress()
            stalled = number % 2 == 1
            if stalled:
                proxy.stall()
                await self.until(lambda: self.in_flight >= WRITERS, "every writer stalled")
            self.start_round("stall+cut" if stalled else "cut")
            self.rounds[-1].links_cut = proxy.cut()
            await self.resume(proxy)
        await self.progress()
        self.start_round("refuse")
        proxy.refuse(Refusal.RESET)
        self.rounds[-1].links_cut = proxy.cut()
        await self.failures(REFUSED_CALLS)
        proxy.refuse(Refusal.CLOSED)
        await self.failures(2 * REFUSED_CALLS)
        await self.resume(proxy)
        await self.progress()
        self.stop.set()

    def start_round(self, kind: str) -> None:
        self.healthy_since = None
        self.rounds.append(Round(kind, in_flight=self.in_flight))

    async def resume(self, proxy: FaultProxy) -> None:
        await proxy.resume()
        self.healthy_since = time.monotonic()

    async def progress(self) -> None:
        """Wait for more acknowledged writes: the store works (again)."""
        target = self.acked + ACKS_BETWEEN_FAULTS
        await self.until(lambda: self.acked >= target, f"{ACKS_BETWEEN_FAULTS} more acks")

    async def failures(self, count: int) -> None:
        await self.until(lambda: self.rounds[-1].failed >= count, f"{count} refused calls")

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), PHASE_TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError(f"no {what} within {PHASE_TIMEOUT} s: {self}") from None

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def __str__(self) -> str:
        return (
            f"acked={self.acked} failed={self.failed} hung={self.hung} "
            f"in_flight={self.in_flight} errors={dict(self.errors)}"
        )


@dataclass
class Found:
    """What the database holds for the ledger."""

    acknowledged: int = 0
    found: int = 0
    problems: list[str] = field(default_factory=list)

    def expect(self, present: bool, what: str) -> None:
        self.acknowledged += 1
        self.found += present
        if not present:
            self.problems.append(what)


async def audit(workload: Workload, store: SQLStore[Any]) -> Found:
    """Compare the ledger with the database, through a store that saw no fault."""
    result = Found()
    items_of: dict[str, set[str]] = {}
    for item_id, thread_id in workload.items.items():
        items_of.setdefault(thread_id, set()).add(item_id)
    for thread_id, context in workload.threads.items():
        exists = await thread_exists(store, thread_id, context)
        stored = {item.id for item in await all_items(store, thread_id, context)}
        acked_items = items_of.get(thread_id, set())
        if thread_id in workload.deleted:
            result.expect(not exists and not stored, f"deleted thread {thread_id} is gone")
        elif thread_id in workload.maybe_deleted:
            # A delete whose outcome the caller never learned: all or nothing.
            whole = exists and acked_items <= stored
            if not (whole or (not exists and not stored)):
                result.problems.append(f"thread {thread_id} is half deleted")
        else:
            result.expect(exists, f"thread {thread_id}")
            for item_id in sorted(acked_items):
                result.expect(item_id in stored, f"item {item_id} of thread {thread_id}")
    return result


@dataclass
class Outcome:
    """A finished run: the workload, the audit, and what the proxy saw."""

    backend: str
    workload: Workload
    found: Found
    orphans: int
    refused: int
    after_ok: int
    after_errors: list[BaseException]
    checked_out: int
    left_open: int
    seconds: float

    @property
    def cuts(self) -> list[Round]:
        return [r for r in self.workload.rounds if r.kind != "refuse"]

    def report(self) -> str:
        w = self.workload
        lines = [
            f"[faults] {self.backend}: {len(self.cuts)} cuts survived "
            f"({sum(r.links_cut for r in w.rounds)} connections cut), 1 refusal window "
            f"({self.refused} connections refused); calls acked {w.acked}, failed {w.failed}, "
            f"hung {w.hung}; writes acknowledged {self.found.acknowledged}, found "
            f"{self.found.found}; orphan items {self.orphans}; connections still checked out "
            f"{self.checked_out}, still open after close() {self.left_open}; "
            f"{self.seconds:.1f} s",
            f"[faults]   errors: {dict(w.errors)}",
            f"[faults]   not in SQLAlchemy's error family: {dict(w.untranslated)}",
        ]
        lines += [
            f"[faults]   {r.kind}: in flight {r.in_flight}, connections cut {r.links_cut}, "
            f"failed calls {r.failed} ({r.failed_after_resume} started after the resume)"
            for r in w.rounds
        ]
        return "\n".join(lines)


async def run(database: Database) -> Outcome:
    """Writers and faults through a proxy, then the audit through the direct URL."""
    started = time.monotonic()
    proxy = FaultProxy(*database.address)
    await proxy.start()
    async with fresh_tables(database.url) as prefix:
        store: SQLStore[Any] = SQLStore.from_url(database.through(proxy.port), table_prefix=prefix)
        direct: SQLStore[Any] = SQLStore.from_url(database.url, table_prefix=prefix)
        workload = Workload(store)
        try:
            writers = [asyncio.ensure_future(workload.writer(n)) for n in range(WRITERS)]
            try:
                await workload.inject(proxy)
            finally:
                workload.stop.set()
                await asyncio.wait_for(asyncio.gather(*writers), CALL_TIMEOUT * 2)
            after_ok, after_errors = await calls_after_recovery(store)
            pool: Any = store.engine.pool
            checked_out = int(pool.checkedout())
            found = await audit(workload, direct)
            orphans = await orphan_items(direct)
        finally:
            await store.close()
            await direct.close()
            left_open = await still_open(proxy)
            await proxy.close()
    return Outcome(
        database.backend,
        workload,
        found,
        orphans,
        proxy.refused,
        after_ok,
        after_errors,
        checked_out,
        left_open,
        time.monotonic() - started,
    )


async def still_open(proxy: FaultProxy) -> int:
    """Connections the store left open after ``close()`` (waits a bounded time for them)."""

    async def closed() -> bool:
        return proxy.live == 0

    with contextlib.suppress(AssertionError):
        await eventually(closed, "every connection closed", timeout=5.0)
    return proxy.live


async def calls_after_recovery(store: SQLStore[Any]) -> tuple[int, list[BaseException]]:
    """The same store object, not rebuilt, after the faults: how many calls succeed."""
    context = {"user_id": "after"}
    ok, errors = 0, list[BaseException]()
    for _ in range(WRITERS):
        thread = models.thread()
        try:
            await store.save_thread(thread, context)
            await store.add_thread_item(thread.id, models.user_message(thread.id), context)
            assert (await store.load_thread(thread.id, context)).id == thread.id
        except Exception as error:
            errors.append(error)
        else:
            ok += 1
    return ok, errors


@pytest.fixture(scope="module", params=SERVERS)
def outcome(request: pytest.FixtureRequest) -> Outcome:
    """One run per server, shared by the tests below (each checks one property)."""
    database = server_database(request)
    # In a thread: its own event loop for the whole run, whatever pytest-asyncio does.
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(asyncio.run, run(database)).result()
    print(f"\n{result.report()}")
    return result


def test_no_call_hangs(outcome: Outcome) -> None:
    assert outcome.workload.hung == 0, "a call neither returned nor raised within the deadline"


def test_failed_calls_raise_database_connection_errors(outcome: Outcome) -> None:
    foreign = outcome.workload.foreign
    assert not foreign, f"not database-connection errors: {[error_name(e) for e in foreign]}"
    for r in outcome.workload.rounds:
        if r.kind == "stall+cut":
            assert r.failed >= 1, f"calls stuck at the cut must fail: {r}"


def test_every_acknowledged_write_is_found(outcome: Outcome) -> None:
    assert outcome.found.problems == [], outcome.found.problems[:10]
    assert outcome.found.acknowledged == outcome.found.found > 0


def test_nothing_is_half_written(outcome: Outcome) -> None:
    assert outcome.orphans == 0, "items whose thread is gone: a delete_thread was half done"


def test_the_store_recovers_by_itself(outcome: Outcome) -> None:
    assert len(outcome.cuts) == CUT_ROUNDS and all(r.links_cut > 0 for r in outcome.cuts)
    for r in outcome.workload.rounds:
        assert r.failed_after_resume <= POOL_CAPACITY, (
            f"recovery took more failed calls than the pool holds: {r}"
        )
    assert outcome.after_errors == [] and outcome.after_ok == WRITERS


def test_no_connection_is_left_checked_out(outcome: Outcome) -> None:
    assert outcome.checked_out == 0, "calls that failed did not give their connection back"


POOL_SIZE = 5
"""SQLAlchemy's default pool_size: connections kept open between calls."""


@pytest.mark.asyncio
async def test_overflow_connections_are_closed_when_returned(
    database: Database, proxy: FaultProxy, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store: SQLStore[Any] = SQLStore.from_url(database.through(proxy.port), table_prefix=prefix)
    context = {"user_id": "alice"}
    try:
        # More concurrent calls than the pool keeps: the overflow connections are closed.
        await asyncio.gather(*(store.save_thread(models.thread(), context) for _ in range(20)))

        async def pool_sized() -> bool:
            return proxy.live <= POOL_SIZE

        closing_failed = [r.getMessage() for r in caplog.records if "closing" in r.getMessage()]
        assert closing_failed == [], closing_failed[:2]
        await eventually(pool_sized, f"at most {POOL_SIZE} connections open ({proxy.live})")
    finally:
        await store.close()


@pytest.mark.parametrize("refusal", list(Refusal))
@pytest.mark.asyncio
async def test_a_failed_connect_raises_the_same_error_family_as_a_failed_query(
    database: Database, proxy: FaultProxy, prefix: str, refusal: Refusal
) -> None:
    store: SQLStore[Any] = SQLStore.from_url(database.through(proxy.port), table_prefix=prefix)
    context = {"user_id": "alice"}
    errors: dict[str, BaseException] = {}
    try:
        seen = proxy.hold_reply_after(f"{prefix}threads".encode())
        call = asyncio.ensure_future(store.save_thread(models.thread(), context))
        await asyncio.wait_for(seen.wait(), CALL_TIMEOUT)
        proxy.cut()
        errors["query"] = await raised(call)
        proxy.refuse(refusal)
        errors["connect"] = await raised(store.save_thread(models.thread(), context))
        await proxy.resume()
        await store.save_thread(models.thread(), context)
    finally:
        await store.close()
    kinds = {when: error_name(error) for when, error in errors.items()}
    assert all(is_connection_error(e) for e in errors.values()), kinds
    assert all(is_sqlalchemy_connection_error(e) for e in errors.values()), kinds


async def raised(call: Awaitable[None]) -> BaseException:
    """The exception ``call`` raises (within the deadline); fail if it returns."""
    try:
        await asyncio.wait_for(call, CALL_TIMEOUT)
    except Exception as error:
        return error
    raise AssertionError("the call succeeded through a broken connection")
