"""A page costs the same at the end of a long list as at its start, on every SQL backend.

Per backend, one module-scoped table set (unique prefix, dropped at the end) is filled
server-side: a 100,000-item thread, as many noise rows in another thread and another tenant,
and a tenant with 100,000 threads among two other tenants' threads. Each test captures the
exact statement the store sends for one page and asks the database for its plan: the page
must walk the order index, bounded by the cursor, without a full scan or a sort, and
(PostgreSQL, MariaDB) read about one page of rows; the cursor is one lookup in the key index.
Latencies are printed, never asserted (run with ``-s``).

``test_pages_do_not_depend_on_statistics`` fills its own tables with automatic statistics off
and checks the same of a hot thread's pages never analyzed, analyzed, and after a thread and a
tenant grew since the last ANALYZE (PostgreSQL plans from statistics).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from sqlalchemy import text

from chatkit_stores import SQLStore
from conftest import drop_tables

N = 100_000
PAGE = 20
ROW_BUDGET = 100  # rows one page of 20 may read, however long the list
PAGE_BUDGET = 300  # buffers/pages one such page may touch (about 20 index + 60 row pages)
CONTEXT = {"tenant_id": "tenant"}
THREAD = "thr_big"
CASES = [(None, "asc"), (None, "desc")] + [
    (position, order) for position in (1_000, 50_000, 99_000) for order in ("asc", "desc")
]

# (i, k, id, ts) for i < N, k < 3, made by the server; ts = i // 2 seconds, so pairs of rows
# tie on created_at and the seq tie-breaker matters.
ROWS = {
    "postgresql": "SELECT i, k, 'm' || lpad(i::text, 6, '0') AS id,"
    " timestamp '2024-01-01' + (i / 2) * interval '1 second' AS ts"
    f" FROM generate_series(0, {N - 1}) AS i, generate_series(0, 2) AS k",
    "mysql": "SELECT a.seq AS i, b.seq AS k, CONCAT('m', LPAD(a.seq, 6, '0')) AS id,"
    " TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (a.seq DIV 2) SECOND AS ts"
    f" FROM seq_0_to_{N - 1} AS a, seq_0_to_2 AS b",
    "sqlite": f"WITH RECURSIVE a(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM a WHERE i < {N - 1})"
    " SELECT i, k, printf('m%06d', i) AS id,"
    " datetime('2024-01-01', '+' || (i / 2) || ' seconds') || '.000000' AS ts"
    " FROM a, (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) AS b",
}
INSERT_ITEMS = """INSERT INTO {table} (seq, tenant, thread_id, id, type, created_at, data)
SELECT 3 * i + k + 1, CASE k WHEN 2 THEN 'other' ELSE 'tenant' END,
  CASE k WHEN 1 THEN 'thr_noise' ELSE 'thr_big' END, id, 'assistant_message', ts,
  REPLACE(:data, '@ID@', id)
FROM ({rows}) AS r"""
INSERT_THREADS = """INSERT INTO {table} (seq, tenant, id, created_at, data)
SELECT 3 * i + k + 1, CASE k WHEN 0 THEN 'tenant' WHEN 1 THEN 'other' ELSE 'third' END, id, ts,
  REPLACE(:data, '@ID@', id)
FROM ({rows}) AS r"""
INSERT_ATTACHMENTS = """INSERT INTO {table} (seq, tenant, id, thread_id, created_at, data)
SELECT 3 * i + k + 1, CASE k WHEN 0 THEN 'tenant' WHEN 1 THEN 'other' ELSE 'third' END, id,
  CASE WHEN MOD(i, 10) = 0 THEN NULL ELSE 'thr_big' END, ts, '{{}}'
FROM ({rows}) AS r"""
ANALYZE = {"postgresql": "ANALYZE {}", "mysql": "ANALYZE TABLE {}", "sqlite": "ANALYZE {}"}


async def _populate(url: str, prefix: str) -> None:
    item = AssistantMessageItem(
        id="@ID@",
        thread_id=THREAD,
        created_at=datetime(2024, 1, 1),
        content=[AssistantMessageContent(text="hi")],
    )
    thread = ThreadMetadata(id="@ID@", created_at=datetime(2024, 1, 1))
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        await store.create_schema()
        tables = store.tables
        items, threads, attachments = (
            tables.items.name,
            tables.threads.name,
            tables.attachments.name,
        )
        rows = ROWS[store.backend]
        async with store.engine.begin() as conn:
            await conn.execute(
                text(INSERT_ITEMS.format(table=items, rows=rows)), {"data": item.model_dump_json()}
            )
            await conn.execute(
                text(INSERT_THREADS.format(table=threads, rows=rows)),
                {"data": thread.model_dump_json()},
            )
            await conn.execute(text(INSERT_ATTACHMENTS.format(table=attachments, rows=rows)))
        async with store.engine.begin() as conn:
            for table in (items, threads, attachments):
                await conn.exec_driver_sql(ANALYZE[store.backend].format(table))


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, table prefix) of a backend filled with the long lists."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('plans') / 'chat.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    prefix = f"qp{uuid.uuid4().hex[:8]}_"
    try:
        asyncio.run(_populate(url, prefix))
        yield url, prefix
    finally:
        asyncio.run(drop_tables(url, prefix))


async def _page_ids(
    store: SQLStore[Any],
    kind: str,
    position: int | None,
    order: str,
    tenant: str = CONTEXT["tenant_id"],
    thread: str = THREAD,
) -> list[str]:
    after = None if position is None else f"m{position:06d}"
    if kind == "items":
        page = await store.load_thread_items(thread, after, PAGE, order, {"tenant_id": tenant})
        return [item.id for item in page.data]
    threads = await store.load_threads(PAGE, after, order, {"tenant_id": tenant})
    return [thread.id for thread in threads.data]


def _expected_ids(position: int | None, order: str, length: int = N) -> list[str]:
    step = 1 if order == "asc" else -1
    if position is None:
        position = -1 if order == "asc" else length
    indexes = (position + step * n for n in range(1, PAGE + 1))
    return [f"m{index:06d}" for index in indexes if 0 <= index < length]


def _page_statement(
    store: SQLStore[Any],
    kind: str,
    position: int | None,
    order: str,
    tenant: str = CONTEXT["tenant_id"],
    thread: str = THREAD,
) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters the store runs for this page (statements are compiled once)."""
    row_kind = "item" if kind == "items" else "thread"
    scope = {"tenant": tenant} | ({"thread_id": thread} if kind == "items" else {})
    after = None if position is None else f"m{position:06d}"
    statement = store.statements.page(row_kind, order, after=position is not None)
    return statement.sql, tuple(statement.args({**scope, "after": after, "limit": PAGE + 1}))


def _dicts(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a JSON plan, depth first."""
    if isinstance(tree, dict):
        yield tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for child in tree:
            yield from _dicts(child)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


async def _check_postgres(
    store: SQLStore[Any], sql: str, params: Any, table: str, index: str, cursor: bool
) -> str:
    # EXPLAIN EXECUTE of a prepared statement shows both plans asyncpg's statement cache may
    # get: custom plans for the first runs, then possibly the generic one.
    shown = []
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql(f"PREPARE qp_page AS {sql}")
        args = ", ".join(_literal(value) for value in params)
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
            result = await conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE qp_page({args})"
            )
            plan = result.scalar_one()  # asyncpg decodes json itself
            [root] = json.loads(plan) if isinstance(plan, str) else plan
            nodes = list(_dicts(root["Plan"]))
            kinds = {node.get("Node Type") for node in nodes}
            assert not kinds & {"Seq Scan", "Sort", "Incremental Sort", "Bitmap Heap Scan"}, kinds
            [scan] = [node for node in nodes if node.get("Alias") == table]
            assert scan["Node Type"] == "Index Scan" and scan["Index Name"] == index, scan
            assert not cursor or "created_at" in scan["Index Cond"], scan["Index Cond"]
            # One lookup of the cursor, through the key index: one row read, whatever the stats.
            lookups = [node for node in nodes if node.get("Alias") == "cursor"]
            assert len(lookups) == cursor, lookups
            for lookup in lookups:
                looked_at = lookup["Actual Rows"] + lookup.get("Rows Removed by Filter", 0)
                assert lookup.get("Index Name") == f"{table}_key" and looked_at <= 1, lookup
            removed = scan.get("Rows Removed by Filter", 0)
            read = scan["Actual Rows"] * scan["Actual Loops"] + removed
            buffers = root["Plan"]["Shared Hit Blocks"] + root["Plan"]["Shared Read Blocks"]
            assert read <= ROW_BUDGET and buffers <= PAGE_BUDGET, (read, buffers)
            shown.append(
                f"{mode}: {scan['Node Type']} {scan['Scan Direction']} {index} "
                f"cond={scan['Index Cond']} rows_read={read} buffers={buffers}"
                + "".join(f"; cursor {lookup['Index Name']}" for lookup in lookups)
            )
        await conn.exec_driver_sql("DEALLOCATE qp_page")
    return "\n".join(shown)


async def _check_mariadb(
    store: SQLStore[Any], sql: str, params: Any, table: str, index: str, cursor: bool
) -> str:
    async with store.engine.connect() as conn:
        raw = (await conn.exec_driver_sql(f"ANALYZE FORMAT=JSON {sql}", params)).scalar_one()
    [scan] = [node for node in _dicts(json.loads(raw)) if node.get("table_name") == table]
    lookups = [node for node in _dicts(json.loads(raw)) if node.get("table_name") == "cursor"]
    assert len(lookups) == cursor, lookups  # read once, by its whole key, before the page
    assert all(n["access_type"] == "const" and n["key"] == f"{table}_key" for n in lookups)
    pages = scan.get("r_engine_stats", {}).get("pages_accessed", 0)
    keys = ("access_type", "key", "used_key_parts", "rows", "r_rows")
    shown = {**{key: scan.get(key) for key in keys}, "pages_accessed": pages}
    assert "filesort" not in raw, raw
    assert scan["key"] == index and scan["access_type"] in ("range", "ref"), shown
    assert not cursor or "created_at" in scan["used_key_parts"], shown
    assert scan["r_rows"] <= ROW_BUDGET and pages <= PAGE_BUDGET, shown
    return str(shown)


async def _check_sqlite(
    store: SQLStore[Any], sql: str, params: Any, table: str, index: str, cursor: bool
) -> str:
    async with store.engine.connect() as conn:
        plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        details: list[str] = [row.detail for row in plan]
    assert not any(d.startswith("SCAN") or "TEMP B-TREE" in d for d in details), details
    [scan] = [d for d in details if d.startswith(f"SEARCH {table} ")]
    assert scan.startswith(f"SEARCH {table} USING INDEX {index} ("), details
    assert not cursor or "created_at" in scan, scan
    lookups = [d for d in details if d.startswith("SEARCH cursor ")]
    assert len(lookups) == cursor, details  # one lookup of the cursor, by its whole key
    key = f"INDEX sqlite_autoindex_{table}_1 (tenant=? AND "
    assert all(key in d and d.endswith(" id=?)") for d in lookups), lookups
    return "\n".join(details)


CHECKS = {"postgresql": _check_postgres, "mysql": _check_mariadb, "sqlite": _check_sqlite}


@pytest.mark.parametrize("kind", ["items", "threads"])
@pytest.mark.parametrize(("position", "order"), CASES)
async def test_page_walks_the_order_index(
    db: tuple[str, str], kind: str, position: int | None, order: str
) -> None:
    url, prefix = db
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        assert await _page_ids(store, kind, position, order) == _expected_ids(position, order)
        sql, params = _page_statement(store, kind, position, order)
        table = getattr(store.tables, kind).name
        shown = await CHECKS[store.backend](
            store, sql, params, table, f"{prefix}{kind}_order", position is not None
        )
        print(f"\n{store.backend} {kind} after={position} {order}:\n{shown}")


async def test_page_latency_does_not_grow(db: tuple[str, str]) -> None:
    """Print the median latency of a page of 20 items at several places in the thread."""
    url, prefix = db
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        await _page_ids(store, "items", None, "asc")  # connect and warm up
        for position, order in CASES:
            times = []
            for _ in range(50):
                start = time.perf_counter()
                await _page_ids(store, "items", position, order)
                times.append(time.perf_counter() - start)
            median_ms = statistics.median(times) * 1000
            print(
                f"\nlatency {store.backend:10} items after={position!s:6} {order:4} "
                f"median {median_ms:6.2f} ms"
            )


# A thread like most: a few rows among many. (Deleting thr_big, a third of the table, is rightly
# a sequential scan; its pages are checked above.)
VALUES = {
    "tenant": CONTEXT["tenant_id"],
    "thread_id": "thr_typical",
    "id": "m050000",
    "after": "m050000",
    "after_tenant": CONTEXT["tenant_id"],
    "after_id": "atc_0",
    "type": "assistant_message",
    "created_at": datetime(2024, 1, 1),
    "before": datetime(2024, 1, 1, 1),
    "data": "{}",
    "version": 0,
    "limit": PAGE + 1,
}


@pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_postgres_runs_every_statement_on_an_index(db: tuple[str, str]) -> None:
    """EXPLAIN each statement the store has, custom and generic plan: no sequential scan."""
    url, prefix = db
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        named = store.statements.every()
        assert len(named) == 30, sorted(named)  # 22 statements and 8 pages
        async with store.engine.connect() as conn:
            for name, statement in named.items():
                await conn.exec_driver_sql(f"PREPARE qp_any AS {statement.sql}")
                args = ", ".join(_literal(value) for value in statement.args(VALUES))
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
                    result = await conn.exec_driver_sql(
                        f"EXPLAIN (FORMAT JSON) EXECUTE qp_any({args})"
                    )
                    plan = result.scalar_one()
                    [root] = json.loads(plan) if isinstance(plan, str) else plan
                    nodes = [node.get("Node Type") for node in _dicts(root["Plan"])]
                    scans = [
                        f"{node.get('Node Type')} {node.get('Index Name', '')}".strip()
                        for node in _dicts(root["Plan"])
                        if "Scan" in str(node.get("Node Type"))
                    ]
                    assert "Seq Scan" not in nodes, (name, mode, nodes)
                    print(f"\n{name:28} {mode:18} {', '.join(scans) or nodes[0]}")
                await conn.exec_driver_sql("DEALLOCATE qp_any")
    assert len(named) > 20


# Statistics that lag behind: pages of a hot list must not depend on them. PostgreSQL plans
# from statistics, and a thread or tenant that grew after the last ANALYZE looks like a row or
# two: the cursor lookup could then walk the order index and filter the whole thread by id, or
# a page read and sort the whole list. Each backend gets its own tables with automatic
# statistics off, so that "never analyzed" and "stale" are states the test controls.
HOT = 2_100
HOT_CASES = [(None, "asc"), (None, "desc"), (HOT // 2, "asc"), (HOT // 2, "desc")]
HOT_CASES += [(HOT - 5, "asc"), (4, "desc")]  # last pages, short
NOISE = 20_000  # items in 2,000 threads of 200 tenants, and 20,000 threads of those tenants
STATS_OFF = {
    "postgresql": "ALTER TABLE {} SET (autovacuum_enabled = false)",
    "mysql": "ALTER TABLE {} STATS_PERSISTENT = 1, STATS_AUTO_RECALC = 0",
}
# Rows (i, id, tenant, thread_id, ts) for i < n, with ids "m" or "n" and six digits.
SERIES = {
    "postgresql": "SELECT i, '{letter}' || lpad(i::text, 6, '0') AS id, {tenant} AS tenant,"
    " {thread} AS thread_id, timestamp '2024-01-01' + (i / 2) * interval '1 second' AS ts"
    " FROM generate_series(0, {n} - 1) AS i",
    "mysql": "SELECT i, CONCAT('{letter}', LPAD(i, 6, '0')) AS id, {tenant} AS tenant,"
    " {thread} AS thread_id, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i DIV 2) SECOND AS ts"
    " FROM (SELECT seq AS i FROM seq_0_to_{last}) AS s",
    "sqlite": "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {last})"
    " SELECT i, printf('{letter}%06d', i) AS id, {tenant} AS tenant, {thread} AS thread_id,"
    " datetime('2024-01-01', '+' || (i / 2) || ' seconds') || '.000000' AS ts FROM s",
}
ADD_ITEMS = """INSERT INTO {table} (seq, tenant, thread_id, id, type, created_at, data)
SELECT {seq} + i, tenant, thread_id, id, 'assistant_message', ts, REPLACE(:data, '@ID@', id)
FROM ({rows}) AS r"""
ADD_THREADS = """INSERT INTO {table} (seq, tenant, id, created_at, data)
SELECT {seq} + i, tenant, id, ts, REPLACE(:data, '@ID@', id) FROM ({rows}) AS r"""


def _one_of(dialect: str, name: str, count: int) -> str:
    """SQL naming row ``i``'s tenant or thread: ``name`` and ``i % count``."""
    if dialect == "mysql":
        return f"CONCAT('{name}', i % {count})"
    return f"'{name}' || (i % {count})"


async def _add(
    store: SQLStore[Any], seq: int, tenant: str, thread: str, threads_too: bool = True
) -> None:
    """Add ``tenant``'s ``HOT``-item ``thread`` and, if ``threads_too``, its ``HOT`` threads."""
    rows = SERIES[store.backend].format(
        letter="m", tenant=f"'{tenant}'", thread=f"'{thread}'", n=HOT, last=HOT - 1
    )
    await _insert(store, seq, rows, threads_too)


async def _insert(store: SQLStore[Any], seq: int, rows: str, threads_too: bool) -> None:
    item = AssistantMessageItem(
        id="@ID@", thread_id="thr", created_at=datetime(2024, 1, 1), content=[]
    )
    thread = ThreadMetadata(id="@ID@", created_at=datetime(2024, 1, 1))
    tables = store.tables
    async with store.engine.begin() as conn:
        await conn.execute(
            text(ADD_ITEMS.format(table=tables.items.name, seq=seq, rows=rows)),
            {"data": item.model_dump_json()},
        )
        if threads_too:
            await conn.execute(
                text(ADD_THREADS.format(table=tables.threads.name, seq=seq, rows=rows)),
                {"data": thread.model_dump_json()},
            )


async def _unanalyzed(url: str, prefix: str) -> None:
    """Tables with automatic statistics off, holding 200 tenants' noise, never analyzed."""
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        await store.create_schema()
        tables = store.tables
        if store.backend in STATS_OFF:
            async with store.engine.begin() as conn:
                for table in (tables.items.name, tables.threads.name):
                    await conn.exec_driver_sql(STATS_OFF[store.backend].format(table))
        rows = SERIES[store.backend].format(
            letter="n",
            tenant=_one_of(store.backend, "noise", 200),
            thread=_one_of(store.backend, "thr_noise", 2_000),
            n=NOISE,
            last=NOISE - 1,
        )
        await _insert(store, 1, rows, threads_too=True)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def unanalyzed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URL, table prefix) of fresh tables with noise, never analyzed; all dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'stale.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    prefix = f"qs{uuid.uuid4().hex[:8]}_"
    try:
        asyncio.run(_unanalyzed(url, prefix))
        yield url, prefix
    finally:
        asyncio.run(drop_tables(url, prefix))


async def _check_hot(
    store: SQLStore[Any],
    state: str,
    tenant: str,
    thread: str,
    kinds: tuple[str, ...] = ("items", "threads"),
) -> None:
    """Pages of ``tenant``'s hot thread (and threads): right rows, plans whatever the stats."""
    for kind in kinds:
        table = getattr(store.tables, kind).name
        for position, order in HOT_CASES:
            ids = await _page_ids(store, kind, position, order, tenant, thread)
            assert ids == _expected_ids(position, order, HOT), (state, kind, position, order)
            sql, params = _page_statement(store, kind, position, order, tenant, thread)
            shown = await CHECKS[store.backend](
                store, sql, params, table, f"{table}_order", position is not None
            )
            print(f"\n{store.backend} {state} {kind} after={position} {order}:\n{shown}")


async def test_pages_do_not_depend_on_statistics(unanalyzed: tuple[str, str]) -> None:
    """A hot list's pages walk the order index, with one key lookup of the cursor: never
    analyzed, analyzed, and after a thread and a tenant grew since the last ANALYZE."""
    url, prefix = unanalyzed
    async with SQLStore.from_url(url, table_prefix=prefix) as store:
        await _add(store, 1_000_000, "fresh", "thr_hot")
        await _check_hot(store, "never analyzed", "fresh", "thr_hot")
        async with store.engine.begin() as conn:
            for table in (store.tables.items.name, store.tables.threads.name):
                await conn.exec_driver_sql(ANALYZE[store.backend].format(table))
        await _check_hot(store, "analyzed", "fresh", "thr_hot")
        await _add(store, 2_000_000, "fresh", "thr_grown", threads_too=False)
        await _add(store, 3_000_000, "later", "thr_hot")
        await _check_hot(store, "stale", "fresh", "thr_grown", kinds=("items",))
        await _check_hot(store, "stale", "later", "thr_hot")
