"""A page costs the same at the end of a long list as at its start, on every SQL backend.

Per backend, one module-scoped table set (unique prefix, dropped at the end) is filled
server-side: a 100,000-item thread, as many noise rows in another thread and another tenant,
and a tenant with 100,000 threads among two other tenants' threads. Each test captures the
exact statement the store sends for one page and asks the database for its plan: the page
must walk the order index, bounded by the cursor, without a full scan or a sort, and
(PostgreSQL, MariaDB) read about one page of rows. Latencies are printed, never asserted
(run with ``-s``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from sqlalchemy import text

from chatkit_stores import SQLStore

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
        rows = ROWS[store.dialect]
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
                await conn.exec_driver_sql(ANALYZE[store.dialect].format(table))


async def _drop(url: str, prefix: str) -> None:
    async with SQLStore.from_url(url, table_prefix=prefix) as store, store.engine.begin() as conn:
        await conn.run_sync(store.tables.metadata.drop_all, checkfirst=True)


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
        asyncio.run(_drop(url, prefix))


async def _page_ids(store: SQLStore[Any], kind: str, position: int | None, order: str) -> list[str]:
    after = None if position is None else f"m{position:06d}"
    if kind == "items":
        page = await store.load_thread_items(THREAD, after, PAGE, order, CONTEXT)
        return [item.id for item in page.data]
    threads = await store.load_threads(PAGE, after, order, CONTEXT)
    return [thread.id for thread in threads.data]


def _expected_ids(position: int | None, order: str) -> list[str]:
    step = 1 if order == "asc" else -1
    if position is None:
        position = -1 if order == "asc" else N
    return [f"m{position + step * n:06d}" for n in range(1, PAGE + 1)]


def _page_statement(
    store: SQLStore[Any], kind: str, position: int | None, order: str
) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters the store runs for this page (statements are compiled once)."""
    name = f"page_{kind.rstrip('s')}_{order}" + ("" if position is None else "_after")
    scope = {"tenant": CONTEXT["tenant_id"]} | ({"thread_id": THREAD} if kind == "items" else {})
    after = None if position is None else f"m{position:06d}"
    statement = store.statements[name]
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
            removed = scan.get("Rows Removed by Filter", 0)
            read = scan["Actual Rows"] * scan["Actual Loops"] + removed
            buffers = root["Plan"]["Shared Hit Blocks"] + root["Plan"]["Shared Read Blocks"]
            assert read <= ROW_BUDGET and buffers <= PAGE_BUDGET, (read, buffers)
            shown.append(
                f"{mode}: {scan['Node Type']} {scan['Scan Direction']} {index} "
                f"cond={scan['Index Cond']} rows_read={read} buffers={buffers}"
            )
        await conn.exec_driver_sql("DEALLOCATE qp_page")
    return "\n".join(shown)


async def _check_mariadb(
    store: SQLStore[Any], sql: str, params: Any, table: str, index: str, cursor: bool
) -> str:
    async with store.engine.connect() as conn:
        raw = (await conn.exec_driver_sql(f"ANALYZE FORMAT=JSON {sql}", params)).scalar_one()
    [scan] = [node for node in _dicts(json.loads(raw)) if node.get("table_name") == table]
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
        shown = await CHECKS[store.dialect](
            store, sql, params, table, f"{prefix}{kind}_order", position is not None
        )
        print(f"\n{store.dialect} {kind} after={position} {order}:\n{shown}")


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
                f"\nlatency {store.dialect:10} items after={position!s:6} {order:4} "
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
        names = list(store.statements.names())
        async with store.engine.connect() as conn:
            for name in names:
                statement = store.statements[name]
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
    assert len(names) == len(set(names)) > 20
