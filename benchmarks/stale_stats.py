"""``python -m benchmarks.stale_stats``: page cost of a hot thread when statistics lag behind.

A big items table (``--threads`` threads of ``--per-thread`` items across ``--tenants`` tenants,
automatic statistics off) gets a hot thread of ``--hot`` items, and its pages are read in four
states of the planner's statistics:

- ``never analyzed``: the table was filled and never analyzed;
- ``analyzed``: after ``ANALYZE``;
- ``stale: thread grew since``: a second hot thread of the same tenant, added after the ANALYZE;
- ``stale: new tenant since``: a hot thread of a tenant added after the ANALYZE.

Each state prints the median latency of ``load_thread_items`` after the thread's middle item
(both orders) and of its newest page, and the plans of those statements: on PostgreSQL the
index and rows read of every scan and the buffers touched (custom and generic plan), on MariaDB
the access of each table, on SQLite ``EXPLAIN QUERY PLAN``. The tables (random prefix) are
dropped at the end.

    python -m benchmarks.stale_stats --backends sqlite,postgresql,mysql
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from chatkit.types import AssistantMessageContent, AssistantMessageItem
from sqlalchemy import text

from chatkit_stores import SQLStore
from chatkit_stores.migrations import version_table

from .__main__ import URL_ENV

PAGE = 20
TENANT = "user_7"

# One row per item, made by the server: (tenant, thread_id, id, created_at). Noise threads get
# random-looking ids of ChatKit's length; their items interleave in time, as real traffic does.
NOISE = {
    "postgresql": "SELECT 'user_' || (t % {tenants}) AS tenant,"
    " 'thr_' || md5('t' || t) AS thread_id, 'msg_' || md5(random()::text) AS id,"
    " timestamp '2024-01-01' + (i * {threads} + t) * interval '1 second' AS created_at"
    " FROM generate_series(0, {per} - 1) AS i, generate_series(0, {threads} - 1) AS t",
    "mysql": "SELECT CONCAT('user_', t.seq % {tenants}) AS tenant, CONCAT('thr_', md5(t.seq))"
    " AS thread_id, CONCAT('msg_', md5(rand())) AS id, TIMESTAMP '2024-01-01 00:00:00'"
    " + INTERVAL (i.seq * {threads} + t.seq) SECOND AS created_at"
    " FROM seq_0_to_{last_item} AS i, seq_0_to_{last_thread} AS t",
    "sqlite": "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {per} - 1),"
    " t(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM t WHERE n < {threads} - 1)"
    " SELECT 'user_' || (t.n % {tenants}) AS tenant, 'thr_' || printf('%032x', t.n * 2654435761)"
    " AS thread_id, 'msg_' || lower(hex(randomblob(16))) AS id,"
    " datetime('2024-01-01', '+' || (i.n * {threads} + t.n) || ' seconds') || '.000000'"
    " AS created_at FROM i, t",
}
HOT = {  # a hot thread of TENANT, newer than the noise; pairs of items tie on created_at
    "postgresql": "SELECT :tenant AS tenant, :thread AS thread_id,"
    " 'msg_' || md5(random()::text) AS id,"
    " timestamp '2025-01-01' + (i / 2) * interval '1 second' AS created_at"
    " FROM generate_series(0, {hot} - 1) AS i",
    "mysql": "SELECT :tenant AS tenant, :thread AS thread_id,"
    " CONCAT('msg_', md5(rand())) AS id,"
    " TIMESTAMP '2025-01-01 00:00:00' + INTERVAL (seq DIV 2) SECOND AS created_at"
    " FROM seq_0_to_{last_hot}",
    "sqlite": "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {hot} - 1)"
    " SELECT :tenant AS tenant, :thread AS thread_id,"
    " 'msg_' || lower(hex(randomblob(16))) AS id,"
    " datetime('2025-01-01', '+' || (n / 2) || ' seconds') || '.000000' AS created_at FROM i",
}
INSERT = """INSERT INTO {table} (tenant, thread_id, id, type, created_at, data)
SELECT tenant, thread_id, id, 'assistant_message', created_at,
  REPLACE(REPLACE(:data, '@ID@', id), '@THREAD@', thread_id)
FROM ({rows}) AS r"""
NO_AUTO_STATS = {
    "postgresql": "ALTER TABLE {} SET (autovacuum_enabled = false)",
    "mysql": "ALTER TABLE {} STATS_PERSISTENT = 1, STATS_AUTO_RECALC = 0",
}
ANALYZE = {"postgresql": "ANALYZE {}", "mysql": "ANALYZE TABLE {}", "sqlite": "ANALYZE {}"}


def _literal(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _nodes(tree: Any) -> Any:
    if isinstance(tree, dict):
        yield tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for child in tree:
            yield from _nodes(child)


async def _plan(store: SQLStore[Any], name: str, values: dict[str, Any]) -> list[str]:
    """The plan of statement ``name`` for ``values``, in a few lines."""
    statement = store.statements.every()[name]
    args = statement.args(values)
    lines = []
    async with store.engine.connect() as conn:
        if store.backend == "postgresql":
            await conn.exec_driver_sql(f"PREPARE stale_page AS {statement.sql}")
            for mode in ("custom", "generic"):
                await conn.exec_driver_sql(f"SET plan_cache_mode = force_{mode}_plan")
                result = await conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE stale_page"
                    f"({', '.join(_literal(a) for a in args)})"
                )
                raw = result.scalar_one()
                [root] = json.loads(raw) if isinstance(raw, str) else raw
                plan = root["Plan"]
                scans = [
                    f"{n.get('Alias', n['Node Type'])} {n['Index Name']} read "
                    f"{n['Actual Rows'] * n['Actual Loops'] + n.get('Rows Removed by Filter', 0)}"
                    for n in _nodes(plan)
                    if "Index Name" in n
                ]
                sort = (
                    " + Sort" if any("Sort" in n.get("Node Type", "") for n in _nodes(plan)) else ""
                )
                buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
                lines.append(f"{mode}: {', '.join(scans)}{sort}; {buffers} buffers")
            await conn.exec_driver_sql("DEALLOCATE stale_page")
        elif store.backend == "mysql":
            result = await conn.exec_driver_sql(f"ANALYZE FORMAT=JSON {statement.sql}", tuple(args))
            for n in _nodes(json.loads(result.scalar_one())):
                if "table_name" in n:
                    pages = n.get("r_engine_stats", {}).get("pages_accessed", 0)
                    lines.append(
                        f"{n['table_name']} {n.get('access_type')} {n.get('key')}"
                        f" r_rows {n.get('r_rows')} pages {pages}"
                    )
        else:
            result = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.sql}", tuple(args))
            lines = [row.detail for row in result]
    return lines


async def _medians_ms(
    store: SQLStore[Any], tenant: str, thread: str, after: str, samples: int
) -> dict[str, float]:
    """Median latency of a page after ``after`` (both orders) and of the newest page."""
    context = {"tenant_id": tenant}
    cases = {
        "after, asc": (after, "asc"),
        "after, desc": (after, "desc"),
        "newest": (None, "desc"),
    }
    times: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(samples):
        for case, (cursor, order) in cases.items():
            start = time.perf_counter()
            page = await store.load_thread_items(thread, cursor, PAGE, order, context)
            times[case].append(time.perf_counter() - start)
            assert len(page.data) == PAGE
    return {case: statistics.median(times[case]) * 1000 for case in cases}


async def run(backend: str, url: str, args: argparse.Namespace) -> None:
    """Fill, measure in each state of the statistics, drop the tables."""
    prefix = f"stale{uuid.uuid4().hex[:6]}_"
    store = SQLStore.from_url(url, table_prefix=prefix)
    tables = store.tables
    item = AssistantMessageItem(
        id="@ID@",
        thread_id="@THREAD@",
        created_at=datetime(2024, 1, 1),
        content=[AssistantMessageContent(text="an answer " * 40)],
    )
    item_json = item.model_dump_json()
    sizes = {
        "tenants": args.tenants,
        "threads": args.threads,
        "per": args.per_thread,
        "hot": args.hot,
        "last_item": args.per_thread - 1,
        "last_thread": args.threads - 1,
        "last_hot": args.hot - 1,
    }
    table = tables.items.name

    async def execute(sql: str, **params: Any) -> None:
        async with store.engine.begin() as conn:
            await conn.execute(text(sql), params)

    async def add_hot(tenant: str, thread: str) -> list[str]:
        rows = HOT[backend].format(**sizes)
        await execute(
            INSERT.format(table=table, rows=rows), tenant=tenant, thread=thread, data=item_json
        )
        async with store.engine.connect() as conn:
            result = await conn.execute(
                text(f"SELECT id FROM {table} WHERE thread_id = :t ORDER BY created_at, seq"),
                {"t": thread},
            )
            return [i.decode() if isinstance(i, bytes) else i for i in result.scalars()]

    async def report(state: str, tenant: str, thread: str, ids: list[str]) -> None:
        after = ids[len(ids) // 2]
        await store.load_thread_items(thread, after, PAGE, "asc", {"tenant_id": tenant})
        medians = await _medians_ms(store, tenant, thread, after, args.samples)
        figures = ", ".join(f"{case} {ms:.3f}" for case, ms in medians.items())
        print(f"{backend:10} {state:26} median ms: {figures}")
        scope = {"tenant": tenant, "thread_id": thread, "limit": PAGE + 1}
        for name, values in (
            ("page_item_asc_after", {**scope, "after": after}),
            ("page_item_desc", scope),
        ):
            print(f"    {name}:\n      " + "\n      ".join(await _plan(store, name, values)))

    try:
        await store.create_schema()
        if backend in NO_AUTO_STATS:
            for name in (table, tables.threads.name):
                await execute(NO_AUTO_STATS[backend].format(name))
        start = time.perf_counter()
        await execute(
            INSERT.format(table=table, rows=NOISE[backend].format(**sizes)), data=item_json
        )
        ids = await add_hot(TENANT, "thr_hot")
        rows = args.threads * args.per_thread + args.hot
        print(f"{backend}: {rows:,} items loaded in {time.perf_counter() - start:.1f} s")
        await report("never analyzed", TENANT, "thr_hot", ids)
        await execute(ANALYZE[backend].format(table))
        await report("analyzed", TENANT, "thr_hot", ids)
        await report(
            "stale: thread grew since", TENANT, "thr_hot2", await add_hot(TENANT, "thr_hot2")
        )
        new = await add_hot("user_new", "thr_hot3")
        await report("stale: new tenant since", "user_new", "thr_hot3", new)
    finally:
        async with store.engine.begin() as conn:
            await conn.run_sync(tables.metadata.drop_all)
            await conn.execute(text(f"DROP TABLE IF EXISTS {version_table(prefix)}"))
        await store.close()


def main() -> None:
    """Parse the command line and run each backend in turn."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.stale_stats", description=__doc__)
    p.add_argument("--backends", default="sqlite,postgresql,mysql")
    p.add_argument("--tenants", type=int, default=1_000)
    p.add_argument("--threads", type=int, default=20_000)
    p.add_argument("--per-thread", type=int, default=20)
    p.add_argument("--hot", type=int, default=2_100)
    p.add_argument("--samples", type=int, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {
            "sqlite": f"sqlite:///{Path(tmp) / 'stale.db'}",
            **{backend: os.environ.get(env) for backend, env in URL_ENV.items()},
        }
        for backend in args.backends.split(","):
            url = urls[backend]
            if url is None:
                raise SystemExit(f"{backend}: set {URL_ENV[backend]}")
            asyncio.run(run(backend, url, args))


if __name__ == "__main__":
    main()
