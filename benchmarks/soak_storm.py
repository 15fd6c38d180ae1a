"""The cancellation storm: many tasks calling with timeouts of milliseconds, then what is left."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from time import perf_counter
from typing import Any

from chatkit.store import NotFoundError
from chatkit.types import ThreadMetadata

from .soak_load import SoakConfig, small_item
from .soak_probes import Noise, Server, process
from .workload import PAGE, new_id, now

STORM_T0 = datetime(2026, 1, 1)
"""Creation time of every storm thread (their saves must not move them)."""


@dataclass
class StormTask:
    """One storm task's tenant and what it saw acknowledged."""

    context: dict[str, str]
    thread_id: str = "thr_storm"
    added: set[str] = field(default_factory=set)
    titles: list[str] = field(default_factory=list)
    """Every title it tried to save, in order."""
    last_saved: int = -1
    """Index in ``titles`` of the last acknowledged save."""
    deleted: list[str] = field(default_factory=list)


@dataclass
class StormCounts:
    """What the storm's calls did."""

    attempted: int = 0
    completed: int = 0
    timed_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def storm_task(
    store: Any, task: StormTask, config: SoakConfig, counts: StormCounts, end: float
) -> None:
    """Random calls with random timeouts until ``end``, remembering what was acknowledged."""
    rng = random.Random(task.context["tenant_id"])
    loop = asyncio.get_running_loop()

    async def attempt(call: Awaitable[Any]) -> bool:
        counts.attempted += 1
        try:
            await asyncio.wait_for(call, rng.uniform(*config.storm_timeouts))
        except asyncio.TimeoutError:
            counts.timed_out += 1
            return False
        except Exception as error:
            counts.errors[type(error).__name__] += 1
            return False
        counts.completed += 1
        return True

    while loop.time() < end:
        choice = rng.random()
        if choice < 0.4:
            item = small_item(task.thread_id)
            if await attempt(store.add_thread_item(task.thread_id, item, task.context)):
                task.added.add(item.id)
        elif choice < 0.6:
            task.titles.append(title := f"title {len(task.titles)}")
            thread = ThreadMetadata(id=task.thread_id, title=title, created_at=STORM_T0)
            if await attempt(store.save_thread(thread, task.context)):
                task.last_saved = len(task.titles) - 1
        elif choice < 0.8:
            scratch = ThreadMetadata(id=new_id("thr"), created_at=now())
            await attempt(store.save_thread(scratch, task.context))
            await attempt(store.add_thread_item(scratch.id, small_item(scratch.id), task.context))
            if await attempt(store.delete_thread(scratch.id, task.context)):
                task.deleted.append(scratch.id)
        else:
            await attempt(store.load_thread_items(task.thread_id, None, PAGE, "desc", task.context))


async def storm(store: Any, server: Server, config: SoakConfig) -> dict[str, Any]:
    """The storm, then its leftovers."""
    tasks = [StormTask({"tenant_id": f"storm-{n}"}) for n in range(config.storm_tasks)]
    await asyncio.gather(
        *(
            store.save_thread(ThreadMetadata(id=t.thread_id, created_at=STORM_T0), t.context)
            for t in tasks
        )
    )
    counts, peak = StormCounts(), Counter[str]()
    before = process()
    loop = asyncio.get_running_loop()
    end, over = loop.time() + config.storm_seconds, asyncio.Event()

    async def watch() -> None:  # the most connections and running statements seen
        while not over.is_set():
            for name, value in (await server.activity()).items():
                if value is not None:
                    peak[name] = max(peak[name], value)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(over.wait(), 0.5)

    with Noise() as noise:
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(storm_task(store, t, config, counts, end) for t in tasks))
        finally:
            over.set()
            await watcher
        right_after = await server.activity()
        lock_free = await server.write_lock_free()
        next_calls = await _next_calls(store, tasks[0])
        leftovers = await _leftovers(store, tasks)
    return {
        "tasks": config.storm_tasks,
        "seconds": config.storm_seconds,
        "attempted": counts.attempted,
        "completed": counts.completed,
        "timed_out": counts.timed_out,
        "errors": dict(counts.errors),
        "during": dict(peak),
        "right_after": right_after,
        "after_checks": await server.activity(),
        "sqlite_write_lock_free": lock_free,
        "next_call": next_calls,
        **leftovers,
        "log_noise": noise.total,
        "log_noise_kinds": dict(noise.counts.most_common(5)),
        "process_before": before,
        "process_after": process(),
    }


async def _next_calls(store: Any, task: StormTask) -> dict[str, dict[str, Any]]:
    """How long the first calls after the storm take (ms), and how they failed if they did."""
    thread_id, context = task.thread_id, task.context
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "load_thread": lambda: store.load_thread(thread_id, context),
        "add_thread_item": lambda: store.add_thread_item(thread_id, small_item(thread_id), context),
    }
    timings = {}
    for name, call in calls.items():
        start, error = perf_counter(), None
        try:
            await call()
        except Exception as failure:  # reported: e.g. a write lock left behind by the storm
            error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:100]}"
        timings[name] = {"ms": (perf_counter() - start) * 1000, "error": error}
    return timings


async def _leftovers(store: Any, tasks: list[StormTask]) -> dict[str, Any]:
    """Acknowledged writes missing, deleted threads with rows back, late title overwrites."""
    found = await asyncio.gather(*(_leftovers_of(store, task) for task in tasks))
    checks = [f for f in found if not isinstance(f, str)]
    return {
        "acknowledged_adds": sum(len(t.added) for t in tasks),
        "acknowledged_adds_missing": sum(missing for missing, _, _ in checks),
        "acknowledged_deletes": sum(len(t.deleted) for t in tasks),
        "deleted_threads_with_rows_back": sum(undeleted for _, undeleted, _ in checks),
        "late_title_overwrites": sum(late for _, _, late in checks),
        "checks_failed": Counter(f for f in found if isinstance(f, str)),
    }


async def _leftovers_of(store: Any, task: StormTask) -> tuple[int, int, bool] | str:
    """One task's missing adds, deleted threads with rows back, and whether its title is late
    (or why they could not be read)."""
    try:
        missing = len(task.added - await _item_ids(store, task.thread_id, task.context))
        undeleted = 0
        for thread_id in task.deleted:
            items = await store.load_thread_items(thread_id, None, 1, "asc", task.context)
            undeleted += await _exists(store, thread_id, task.context) or bool(items.data)
        title = (await store.load_thread(task.thread_id, task.context)).title
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    # Late: a save abandoned before the last acknowledged one landed after it.
    late = task.last_saved >= 0 and title not in task.titles[task.last_saved :]
    return missing, undeleted, late


async def _item_ids(store: Any, thread_id: str, context: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    after = None
    while True:
        page = await store.load_thread_items(thread_id, after, 1000, "asc", context)
        ids.update(item.id for item in page.data)
        if (after := page.after) is None:
            return ids


async def _exists(store: Any, thread_id: str, context: dict[str, str]) -> bool:
    try:
        await store.load_thread(thread_id, context)
    except NotFoundError:
        return False
    return True
