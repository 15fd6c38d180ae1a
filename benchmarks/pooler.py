"""``python -m benchmarks.pooler``: the store behind a transaction-mode pooler (PgBouncer).

Two measurements, both through the same pooler URL (``--url``, default
``$CHATKIT_STORES_PGBOUNCER_URL``):

- ``load``: ``--tasks`` concurrent tasks making ChatKit-like calls (a thread saved, items added,
  the thread, its last items and the tenant's threads read, the thread saved again and
  deleted) on a store built
  from the plain URL, as a new user would. Prints the errors that reached the caller, by
  message, and the acknowledged writes lost (threads and items whose ``save_thread`` or
  ``add_thread_item`` returned but which are not in the database after).
- ``per_call``: the same calls one at a time, our store against raw asyncpg configured for a
  pooler (``statement_cache_size=0``), interleaved; the median per call and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import uuid
from collections import Counter
from collections.abc import Awaitable
from time import perf_counter
from typing import Any

from sqlalchemy import inspect

from chatkit_stores import PostgresStore

from .variants.raw_pg import RawPostgresStore
from .workload import SESSION_CALLS, Content, chat_session, timer

URL_ENV = "CHATKIT_STORES_PGBOUNCER_URL"
PREFIX = "pgb_"
CALLS = SESSION_CALLS


def _kind(call: str, error: Exception) -> str:
    """An error's first line without statement names, so errors of one kind count together."""
    first = str(getattr(error, "orig", None) or error).splitlines()[0]
    first = re.sub(r"__asyncpg_stmt_[0-9a-f]+__", "S", first)
    first = re.sub(r"(thr|msg)_[0-9a-f]+", r"\1_…", first)
    return f"{call}: {type(error).__name__}: {first}"


async def load(
    url: str, tasks: int, calls: int, engine_options: dict[str, Any] | None
) -> dict[str, Any]:
    """Run the concurrent load; return errors by message and acknowledged writes lost."""
    store: PostgresStore[dict[str, str]] = PostgresStore(
        url, table_prefix=PREFIX, engine_options=engine_options
    )
    await store.create_schema()
    errors: Counter[str] = Counter()
    acknowledged: list[tuple[str, str, str | None]] = []  # tenant, thread, item or None
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        content = Content(n)
        tenant = f"load-{n}-{uuid.uuid4().hex[:8]}"

        async def record(name: str, call: Awaitable[Any]) -> Any:
            nonlocal done
            done += 1
            try:
                result = await call
            except Exception as error:
                errors[_kind(name, error)] += 1
                return None
            return result

        while done < calls:
            context = {"tenant_id": tenant}
            thread = content.thread()
            item = content.user_message(thread.id)
            for call, write in (
                ("save_thread", store.save_thread(thread, context)),
                ("add_thread_item", store.add_thread_item(thread.id, item, context)),
            ):
                done += 1
                try:
                    await write
                    acknowledged.append((tenant, thread.id, item.id if "item" in call else None))
                except Exception as error:
                    errors[_kind(call, error)] += 1
            await chat_session(store, content, tenant, record)

    started = perf_counter()
    try:
        await asyncio.gather(*(worker(n) for n in range(tasks)))
        elapsed = perf_counter() - started
        lost = 0
        for tenant, thread_id, item_id in acknowledged:
            context = {"tenant_id": tenant}
            try:
                if item_id is None:
                    await store.load_thread(thread_id, context)
                else:
                    await store.load_item(thread_id, item_id, context)
            except Exception:
                lost += 1
    finally:
        await _drop(store)
    return {
        "calls": done,
        "seconds": elapsed,
        "errors": dict(errors),
        "acknowledged": len(acknowledged),
        "lost": lost,
    }


async def per_call(url: str, sessions: int) -> dict[str, dict[str, float]]:
    """Median microseconds per call: ours vs raw asyncpg for a pooler, interleaved."""
    options = {"pool_size": 2, "max_overflow": 0}  # a plain URL: the pooler is detected
    ours: PostgresStore[dict[str, str]] = PostgresStore(
        url, table_prefix=PREFIX, engine_options=options
    )
    await ours.create_schema()
    raw = await RawPostgresStore.open(url, PREFIX, 2, pooler=True)
    timings: dict[str, dict[str, list[float]]] = {"ours": {}, "raw": {}}
    try:
        for n in range(sessions):
            for name, store in (
                (("ours", ours), ("raw", raw))
                if n % 2
                else (
                    ("raw", raw),
                    ("ours", ours),
                )
            ):
                await chat_session(store, Content(n), f"{name}-{n}", timer(timings[name]))
    finally:
        await raw.close()
        await _drop(ours)
    medians = {
        name: {call: statistics.median(times) * 1e6 for call, times in calls.items()}
        for name, calls in timings.items()
    }
    return medians


async def _drop(store: PostgresStore[Any]) -> None:
    """Drop the benchmark's tables (data and version table), then close the store."""
    async with store.engine.begin() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        for name in names:
            if name.startswith(PREFIX):
                await conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    await store.close()


def main() -> None:
    """Parse the command line, run, print."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.pooler", description=__doc__)
    p.add_argument("--url", default=os.environ.get(URL_ENV), help=f"default ${URL_ENV}")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--calls", type=int, default=6000)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-per-call", action="store_true")
    args = p.parse_args()
    if not args.url:
        raise SystemExit(f"No pooler URL: pass --url or set ${URL_ENV}")
    if not args.skip_load:
        result = asyncio.run(load(args.url, args.tasks, args.calls, None))
        print(
            f"load: {args.tasks} tasks, {result['calls']} calls in {result['seconds']:.1f} s, "
            f"{sum(result['errors'].values())} errors, {result['acknowledged']} acknowledged "
            f"writes checked, {result['lost']} lost"
        )
        for message, count in sorted(result["errors"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:5d}  {message}")
    if not args.skip_per_call:
        medians = asyncio.run(per_call(args.url, args.sessions))
        print(f"per call through the pooler, median of {args.sessions} (us):")
        print(f"  {'call':<20}{'ours':>8}{'raw':>8}{'ratio':>8}")
        for call in CALLS:
            ours_us, raw_us = medians["ours"][call], medians["raw"][call]
            print(f"  {call:<20}{ours_us:8.0f}{raw_us:8.0f}{ours_us / raw_us:8.2f}")


if __name__ == "__main__":
    main()
