"""``python -m benchmarks.citus``: what a store call costs on Citus, next to one PostgreSQL.

Both targets are on the same server, a Citus coordinator (``--citus-url``, default
``$CHATKIT_STORES_CITUS_URL``), so that they share its settings (durability included); the
calls are interleaved (one call of each target in turn), one call at a time:

- ``postgres``: tables of their own (prefix ``bcip_``) left undistributed, which Citus keeps as
  plain PostgreSQL tables on the coordinator: the store as on one PostgreSQL;
- ``citus``: tables distributed by tenant (prefix ``bcit_``): every statement is routed by the
  coordinator to one shard on one worker (single-shard);
- ``citus fan-out``: a statement that names no tenant (``SELECT count(*)`` of a thread's items
  without the tenant), which the coordinator sends to every shard and merges: what a query
  costs that the store never runs for a tenant, but a cross-tenant sweep (orphans, prune) does.

Prints the median and p99 per call in milliseconds and the ratio to plain PostgreSQL. The
tables are made (and the ``bcit_`` ones distributed) at the start and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid
from time import perf_counter
from typing import Any

from chatkit_stores import PostgresStore, SQLStore
from chatkit_stores.migrations import migrate, run_sync
from chatkit_stores.operations.distribute import distribute_tables

from .workload import SESSION_CALLS, Content, chat_session, timer

PREFIX = "bcit_"
LOCAL_PREFIX = "bcip_"
CALLS = SESSION_CALLS


async def _drop(url: str, prefix: str) -> None:
    def drop(conn: Any) -> None:
        for table in ("attachments", "items", "threads", "stores_alembic_version"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {prefix}{table}")

    await run_sync(url, drop)


async def _fan_out(store: SQLStore[Any], into: dict[str, list[float]]) -> None:
    """A statement without the tenant: every shard answers through the coordinator."""
    async with store.engine.connect() as conn:
        started = perf_counter()
        table = f"{store.table_prefix}items"
        await conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE thread_id = 'thr_x'")
        into.setdefault("fan-out count", []).append(perf_counter() - started)


async def measure(url: str, sessions: int) -> dict[str, Any]:
    """Median and p99 (ms) per call and target."""
    for prefix in (LOCAL_PREFIX, PREFIX):
        await _drop(url, prefix)
        await migrate(url, prefix=prefix)
    await run_sync(url, lambda conn: distribute_tables(conn, PREFIX))
    times: dict[str, dict[str, list[float]]] = {"postgres": {}, "citus": {}}
    content = Content()
    try:
        async with (
            PostgresStore[Any](url, table_prefix=LOCAL_PREFIX) as plain,
            PostgresStore[Any](url, table_prefix=PREFIX) as citus,
        ):
            stores = {"postgres": plain, "citus": citus}
            for n in range(sessions + 5):  # five sessions each to warm up
                for name, store in stores.items():
                    into: dict[str, list[float]] = {} if n < 5 else times[name]
                    await chat_session(store, content, f"t{uuid.uuid4().hex[:12]}", timer(into))
                    await _fan_out(store, into)
    finally:
        for prefix in (LOCAL_PREFIX, PREFIX):
            await _drop(url, prefix)
    return {
        target: {call: (statistics.median(v) * 1000, _p99(v) * 1000) for call, v in calls.items()}
        for target, calls in times.items()
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(results: dict[str, Any]) -> str:
    """A Markdown table: median / p99 per call, and the Citus-to-PostgreSQL ratio."""
    lines = [
        "| call | one PostgreSQL: median / p99 (ms) | Citus: median / p99 (ms) | Citus / one |",
        "| --- | ---: | ---: | ---: |",
    ]
    for call in (*CALLS, "fan-out count"):
        plain, citus = results["postgres"][call], results["citus"][call]
        lines.append(
            f"| {call} | {plain[0]:.2f} / {plain[1]:.2f} | {citus[0]:.2f} / {citus[1]:.2f} "
            f"| {citus[0] / plain[0]:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.citus", description=__doc__)
    p.add_argument("--citus-url", default=os.environ.get("CHATKIT_STORES_CITUS_URL"))
    p.add_argument("--sessions", type=int, default=300, help="chat sessions per target")
    args = p.parse_args()
    if not args.citus_url:
        p.error("give --citus-url (or set CHATKIT_STORES_CITUS_URL): a Citus coordinator")
    print(report(asyncio.run(measure(args.citus_url, args.sessions))))


if __name__ == "__main__":
    main()
