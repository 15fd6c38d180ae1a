"""Does a page cost the same deep in a long list? Our stores only, on bulk-loaded tables.

- Items: a page near the start vs near the end of one 100,000-item thread (both orders).
- Threads: ``load_threads`` for one tenant's 100 threads inside a table of 1,000,000 threads
  (10,000 tenants) vs a table holding only that tenant's threads.

The loaded tables are kept (a marker row names their sizes), so the next run skips the load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from random import Random
from time import perf_counter
from typing import Any

from chatkit.store import NotFoundError
from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from sqlalchemy import text

from .bulk import ITEM_COLUMNS, THREAD_COLUMNS, empty_tables, load
from .config import Config
from .measure import Recorder, summary
from .variants import Target, ours
from .workload import PAGE, T0

TENANT = {"tenant_id": "scale"}
MARKER = {"tenant_id": "__benchmark__"}
TENANTS = 10_000
"""How many tenants share the big threads table."""
TENANT_THREADS = 100
"""Threads of the measured tenant, spread evenly through the big table."""
LONG = "thr_long"
ROWS_VERSION = 2
"""Bump when the generated rows change, so cached tables are loaded again."""


def _template(model: Any) -> str:
    """A model's JSON, to fill in by text (its id and ``T0`` as created_at get replaced)."""
    json = str(model.model_dump_json())
    assert T0.isoformat() in json, "timestamps serialize as isoformat()"
    return json


def item_id(n: int) -> str:
    """The id of the ``n``-th item of the long thread."""
    return f"msg_{n:09d}"


def thread_ids(count: int) -> list[str]:
    """Ids of the measured tenant's threads, oldest first."""
    return [f"thr_{n:09d}" for n in range(0, count, max(1, count // TENANT_THREADS))]


def thread_rows(count: int, only_measured: bool) -> Iterator[tuple[Any, ...]]:
    """``count`` threads, one second apart; every (count/100)-th belongs to the measured tenant."""
    template = _template(ThreadMetadata(id="thr_TEMPLATE", title="A thread", created_at=T0))
    stride = max(1, count // TENANT_THREADS)
    for n in range(0, count, stride if only_measured else 1):
        at = T0 + timedelta(seconds=n)
        tenant = TENANT["tenant_id"] if n % stride == 0 else f"tenant-{n % TENANTS}"
        thread_id = f"thr_{n:09d}"
        yield (
            tenant,
            thread_id,
            at,
            template.replace("thr_TEMPLATE", thread_id).replace(T0.isoformat(), at.isoformat()),
        )


def item_rows(count: int) -> Iterator[tuple[Any, ...]]:
    """``count`` assistant messages of about 1 KB in the long thread, one second apart."""
    text = "an answer from the history of a long thread " * 22
    message = AssistantMessageItem(
        id="msg_TEMPLATE",
        thread_id=LONG,
        created_at=T0,
        content=[AssistantMessageContent(text=text)],
    )
    template = _template(message)
    for n in range(count):
        at = T0 + timedelta(seconds=n)
        data = template.replace("msg_TEMPLATE", item_id(n)).replace(T0.isoformat(), at.isoformat())
        yield TENANT["tenant_id"], LONG, item_id(n), "assistant_message", at, data


async def ensure_loaded(
    store: Any,
    prefix: str,
    target: Target,
    threads: int,
    items: int,
    measured_only: bool,
    log: Callable[[str], None],
) -> None:
    """Bulk-load the scaling tables unless the marker says they already hold these sizes."""
    marker = f"v{ROWS_VERSION}-{threads}-threads-{items}-items-{measured_only}"
    try:
        await store.load_thread(marker, MARKER)
        log(f"{target.backend}: {prefix}* already loaded ({marker})")
        return
    except NotFoundError:
        pass
    log(f"{target.backend}: loading {prefix}* ({marker})...")
    start = perf_counter()
    await empty_tables(store, prefix)
    await load(target, f"{prefix}threads", THREAD_COLUMNS, thread_rows(threads, measured_only))
    await load(target, f"{prefix}items", ITEM_COLUMNS, item_rows(items))
    analyze = "ANALYZE TABLE" if target.backend == "mysql" else "ANALYZE"
    async with store.engine.connect() as conn:  # fresh statistics for the planner
        for table in ("threads", "items"):
            await conn.execute(text(f"{analyze} {prefix}{table}"))
        await conn.commit()
    await store.save_thread(ThreadMetadata(id=marker, created_at=T0), MARKER)
    log(f"{target.backend}: loaded {prefix}* in {perf_counter() - start:.0f} s")


async def run_scaling(target: Target, config: Config, log: Callable[[str], None]) -> dict[str, Any]:
    """Page latencies at both ends of the long thread, and in the big vs the small table."""
    if target.backend == "sqlite":  # kept between runs, beside the other caches
        config.cache_dir.mkdir(parents=True, exist_ok=True)
        target = Target("sqlite", f"sqlite:///{config.cache_dir / f'{config.prefix}scaling.db'}")
    n, count = config.scaling_items, config.scaling_threads
    # Tables per size, so quick and full runs each keep their own loaded copy.
    big_prefix, small_prefix = f"{config.prefix}scale{count}_", f"{config.prefix}small{count}_"
    big, small = ours(target, big_prefix, 2), ours(target, small_prefix, 2)
    try:
        for store in (big, small):
            await store.create_schema()
        await ensure_loaded(big, big_prefix, target, count, n, False, log)
        await ensure_loaded(small, small_prefix, target, count, 0, True, log)
        ids = thread_ids(count)
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "items asc, start": lambda: big.load_thread_items(
                LONG, item_id(PAGE - 1), PAGE, "asc", TENANT
            ),
            "items asc, end": lambda: big.load_thread_items(
                LONG, item_id(n - 2 * PAGE - 1), PAGE, "asc", TENANT
            ),
            "items desc, start": lambda: big.load_thread_items(
                LONG, item_id(n - PAGE), PAGE, "desc", TENANT
            ),
            "items desc, end": lambda: big.load_thread_items(
                LONG, item_id(2 * PAGE), PAGE, "desc", TENANT
            ),
            "items, newest page": lambda: big.load_thread_items(LONG, None, PAGE, "desc", TENANT),
            "threads, small table": lambda: small.load_threads(PAGE, ids[-PAGE], "desc", TENANT),
            "threads, big table": lambda: big.load_threads(PAGE, ids[-PAGE], "desc", TENANT),
        }
        recorder, names, shuffle = Recorder(), list(cases), Random(0).shuffle
        for _ in range(config.scaling_samples):  # interleaved, so noise hits every case alike
            shuffle(names)  # and no case always follows the same one
            for name in names:
                page = await recorder(name, cases[name]())
                assert len(page.data) == PAGE, f"{name}: {len(page.data)} rows"
    finally:
        await big.close()
        await small.close()
    cases_ms = {name: summary(recorder.samples[name]) for name in cases}
    median = {name: figures["median_ms"] for name, figures in cases_ms.items()}
    log(f"{target.backend}: scaling done")
    return {
        "thread_items": n,
        "threads": count,
        "cases": cases_ms,
        "items_end_vs_start": max(
            median["items asc, end"] / median["items asc, start"],
            median["items desc, end"] / median["items desc, start"],
        ),
        "threads_big_vs_small": median["threads, big table"] / median["threads, small table"],
    }
