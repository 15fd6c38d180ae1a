"""The soak's load: its configuration, the soak itself (tenants chatting for minutes, sampled
every ``sample_every`` calls) and the fairness part (tasks outnumbering connections)."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, TypeVar

from chatkit.types import ThreadMetadata, UserMessageItem, UserMessageTextContent
from sqlalchemy import exc

from .measure import between_calls, p99
from .soak_probes import Server, process
from .workload import PAGE, Content, new_id, now

T = TypeVar("T")
PER = 10_000
"""Growth is reported per this many calls."""
Log = Callable[[str], None]


@dataclass
class SoakConfig:
    """Durations and sizes; ``quick()`` gives a run of well under a minute per backend."""

    minutes: float = 5.0
    storm_seconds: float = 60.0
    fairness_seconds: float = 10.0
    """Per operation (a read, then a write)."""
    tenants: int = 20
    keep_threads: int = 50
    """Threads each soak tenant keeps: older ones are deleted, so the tables grow then level."""
    sample_every: int = PER
    pool_size: int = 10
    fair_tasks: int = 48
    fair_pool: dict[str, Any] = field(
        default_factory=lambda: {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2}
    )
    storm_tasks: int = 200
    storm_timeouts: tuple[float, float] = (0.0001, 0.005)
    prefix: str = "soak_"

    def quick(self) -> SoakConfig:
        """About 25 s per backend."""
        self.minutes, self.storm_seconds, self.fairness_seconds = 0.25, 5.0, 3.0
        self.sample_every = 2_000
        return self


# 1. Soak


class Recorder:
    """Latency per operation over the first ``window`` calls and the last ``window`` calls."""

    def __init__(self, window: int, on_call: Callable[[int], None]) -> None:
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.first: list[tuple[str, float]] = []
        self.last: deque[tuple[str, float]] = deque(maxlen=window)
        self.window = window
        self.on_call = on_call

    async def __call__(self, operation: str, call: Awaitable[T]) -> T:
        """Await ``call``, timing it as ``operation``."""
        start = perf_counter()
        result = await call
        sample = (operation, perf_counter() - start)
        if len(self.first) < self.window:
            self.first.append(sample)
        self.last.append(sample)
        self.calls += 1
        self.on_call(self.calls)
        await between_calls()  # as a server streaming events does (the memory store never would)
        return result


def latency(samples: list[tuple[str, float]] | deque[tuple[str, float]]) -> dict[str, Any]:
    """p50 and p99 in ms per operation."""
    by_operation: dict[str, list[float]] = {}
    for operation, seconds in samples:
        by_operation.setdefault(operation, []).append(seconds * 1000)
    return {
        op: {"p50_ms": statistics.median(ms), "p99_ms": p99(ms), "n": len(ms)}
        for op, ms in sorted(by_operation.items())
    }


async def tenant_loop(store: Any, n: int, config: SoakConfig, record: Recorder, end: float) -> None:
    """One tenant's chats: new threads, five turns each, pages, an attachment, old threads
    deleted beyond ``keep_threads``."""
    context, content = {"tenant_id": f"soak-{n}"}, Content(seed=n)
    threads: deque[str] = deque()
    loop = asyncio.get_running_loop()
    while loop.time() < end:
        try:
            thread = content.thread()
            await record("save_thread", store.save_thread(thread, context))
            threads.append(thread.id)
            for _ in range(5):
                if loop.time() < end:
                    await chat_turn(store, thread.id, content, context, record)
            await record("load_threads", store.load_threads(PAGE, None, "desc", context))
            await record(
                "items_page", store.load_thread_items(thread.id, None, PAGE, "asc", context)
            )
            attachment = content.attachment(thread.id)
            await record("save_attachment", store.save_attachment(attachment, context))
            await record("load_attachment", store.load_attachment(attachment.id, context))
            if len(threads) > config.keep_threads:
                await record("delete_thread", store.delete_thread(threads.popleft(), context))
        except Exception as error:  # counted and reported; the soak goes on
            record.errors[type(error).__name__] += 1


async def chat_turn(
    store: Any, thread_id: str, content: Content, context: dict[str, str], record: Recorder
) -> None:
    """What ChatKitServer asks for one response: load, recent items, four adds, save."""
    thread = await record("load_thread", store.load_thread(thread_id, context))
    await record("recent_items", store.load_thread_items(thread_id, None, PAGE, "desc", context))
    for item in content.turn_items(thread_id):
        await record("add_thread_item", store.add_thread_item(thread_id, item, context))
    thread.title = content.text(10, 60)
    await record("save_thread", store.save_thread(thread, context))


async def sample(server: Server, store: Any, calls: int, started: float) -> dict[str, Any]:
    """Process and server figures, and the row counts, now."""
    return {
        "calls": calls,
        "seconds": round(perf_counter() - started, 1),
        **process(),
        **(await server.activity()),
        "rows": await server.rows(store),
    }


async def soak(store: Any, server: Server, config: SoakConfig, log: Log) -> dict[str, Any]:
    """Run the tenants for ``config.minutes``, sampling every ``sample_every`` calls."""
    due, every = asyncio.Event(), config.sample_every
    record = Recorder(every, lambda calls: None if calls % every else due.set())
    started = perf_counter()
    samples = [await sample(server, store, 0, started)]
    first_window_rows: dict[str, int] = {}
    done = False

    async def sampler() -> None:  # never cancelled: a query cut in half breaks the connection
        while True:
            await due.wait()
            due.clear()
            if done:
                return
            samples.append(await sample(server, store, record.calls, started))
            first_window_rows.setdefault("rows", samples[-1]["rows"])
            log(f"  {record.calls:,} calls, RSS {samples[-1]['rss_mb']:.1f} MB")

    watcher = asyncio.create_task(sampler())
    end = asyncio.get_running_loop().time() + config.minutes * 60
    try:
        await asyncio.gather(
            *(tenant_loop(store, n, config, record, end) for n in range(config.tenants))
        )
    finally:
        done = True
        due.set()
        await watcher
    elapsed = perf_counter() - started
    samples.append(await sample(server, store, record.calls, started))
    return {
        "calls": record.calls,
        "seconds": elapsed,
        "calls_per_s": record.calls / elapsed,
        "errors": dict(record.errors),
        "samples": samples,
        "growth_per_10k": growth(samples),
        "start": {"latency": latency(record.first), "rows": first_window_rows.get("rows")},
        "end": {"latency": latency(record.last), "rows": samples[-1]["rows"]},
    }


GROWING = ("rss_mb", "objects", "greenlets", "fds", "connections")


def growth(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Change per 10,000 calls from the sample nearest the half-way call count to the last."""
    last = samples[-1]
    middle = min(samples[:-1], key=lambda s: abs(s["calls"] - last["calls"] / 2))
    calls = last["calls"] - middle["calls"]
    return {
        name: None
        if last[name] is None or calls <= 0
        else (last[name] - middle[name]) * PER / calls
        for name in GROWING
    }


# 2. Fairness


def small_item(thread_id: str) -> UserMessageItem:
    """A short user message (the fairness and storm parts time the pool, not JSON)."""
    return UserMessageItem(
        id=new_id("msg"),
        thread_id=thread_id,
        created_at=now(),
        content=[UserMessageTextContent(text="ping")],
        attachments=[],
        inference_options={},
    )


async def fairness(store: Any, config: SoakConfig) -> dict[str, Any]:
    """Tasks outnumbering connections call back to back: a read, then a write."""
    contexts = [{"tenant_id": f"fair-{n}"} for n in range(config.fair_tasks)]
    thread_id = "thr_fair"
    new = [ThreadMetadata(id=thread_id, created_at=now()) for _ in contexts]  # one object each:
    await asyncio.gather(*map(store.save_thread, new, contexts))  # a store knows what it saved
    operations: dict[str, Callable[[dict[str, str]], Awaitable[Any]]] = {
        "load_thread": lambda c: store.load_thread(thread_id, c),
        "add_thread_item": lambda c: store.add_thread_item(thread_id, small_item(thread_id), c),
    }
    results = {}
    for name, call in operations.items():
        results[name] = await _back_to_back(call, contexts, config.fairness_seconds)
    return results


async def _back_to_back(
    call: Callable[[dict[str, str]], Awaitable[Any]], contexts: list[dict[str, str]], seconds: float
) -> dict[str, Any]:
    counts = [0] * len(contexts)
    timeouts, errors, longest = [0] * len(contexts), Counter[str](), 0.0
    end = asyncio.get_running_loop().time() + seconds

    async def task(n: int) -> None:
        nonlocal longest
        while asyncio.get_running_loop().time() < end:
            start = perf_counter()
            try:
                await call(contexts[n])
            except exc.TimeoutError:
                timeouts[n] += 1
            except Exception as error:
                errors[type(error).__name__] += 1
            else:
                counts[n] += 1
            longest = max(longest, perf_counter() - start)

    await asyncio.gather(*(task(n) for n in range(len(contexts))))
    return {
        "calls": sum(counts),
        "per_task": {"min": min(counts), "median": statistics.median(counts), "max": max(counts)},
        "tasks_without_calls": sum(1 for c in counts if c == 0),
        "timeouts": sum(timeouts),
        "errors": dict(errors),
        "longest_call_s": longest,
        "fair": min(counts) > 0 and sum(timeouts) == 0 and not errors,
    }
