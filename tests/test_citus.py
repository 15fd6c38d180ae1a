"""The stores on Citus: tables distributed by tenant, co-located, on a coordinator and two workers.

Run when ``CHATKIT_STORES_CITUS_URL`` names a coordinator (``.ci/citus`` builds Citus if needed,
starts a throw-away cluster and runs ``nox -s citus``). The tables are migrated, then
distributed with ``chatkit-stores distribute``; the whole conformance suite, the sealing
machine and (in tests/test_row_level_security.py) the Row-Level Security tests run on them.
Every statement the store sends for a tenant is checked with EXPLAIN to run as one task on one
shard, and ``delete_thread``'s transaction to stay on one worker.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    ThreadMetadata,
)

from chatkit_stores import DiskAttachmentStore, PostgresStore, SQLStore
from chatkit_stores.cli import main as cli
from chatkit_stores.migrations import migrate, run_sync
from chatkit_stores.operations.distribute import _distribution, distribute_tables
from chatkit_stores.sql.driver import PostgresDriver
from conftest import drop_tables
from test_stores import SQLStoreTests

pytestmark = pytest.mark.postgres

PREFIX = "ckc_"


def distributed(url: str, prefix: str) -> None:
    """Migrate the tables of ``prefix`` and distribute them, as an operator would."""
    asyncio.run(migrate(url, prefix=prefix))
    assert cli(["distribute", url, "--table-prefix", prefix]) == 0


@pytest.fixture(scope="module")
def citus_tables(citus_url: str) -> Iterator[str]:
    """The coordinator's URL, with distributed tables of ``PREFIX`` (dropped afterwards)."""
    distributed(citus_url, PREFIX)
    try:
        yield citus_url
    finally:
        asyncio.run(drop_tables(citus_url, PREFIX))


class TestCitusStore(SQLStoreTests):
    """The conformance suite, unchanged, on distributed tables."""

    @pytest_asyncio.fixture
    async def store(self, citus_tables: str) -> AsyncIterator[PostgresStore[Any]]:
        async with PostgresStore(citus_tables, table_prefix=PREFIX) as store:
            yield store


def _colocation(url: str, prefix: str) -> dict[str, tuple[str, int]]:
    def read(conn: sa.Connection) -> dict[str, tuple[str, int]]:
        rows = conn.execute(
            sa.text(
                "SELECT logicalrelid::text, column_to_column_name(logicalrelid, partkey),"
                " colocationid FROM pg_dist_partition WHERE logicalrelid::text LIKE :p"
            ),
            {"p": f"{prefix}%"},
        )
        return {name: (column, group) for name, column, group in rows}

    found: dict[str, tuple[str, int]] = asyncio.run(run_sync(url, read))
    return found


def test_distribute_is_idempotent_and_colocates_by_tenant(
    citus_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cd{uuid.uuid4().hex[:8]}_"
    try:
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 1
        assert "run `chatkit-stores migrate URL` first" in capsys.readouterr().err
        asyncio.run(migrate(citus_url, prefix=prefix))
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 0
        assert "(ckc" not in capsys.readouterr().out
        placed = _colocation(citus_url, prefix)
        assert sorted(placed) == sorted(f"{prefix}{t}" for t in ("threads", "items", "attachments"))
        assert {column for column, _ in placed.values()} == {"tenant"}
        assert len({group for _, group in placed.values()}) == 1, "co-located"
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 0
        assert "nothing to do, already distributed" in capsys.readouterr().out
        assert _colocation(citus_url, prefix) == placed
    finally:
        asyncio.run(drop_tables(citus_url, prefix))


def test_distribute_changes_nothing_when_a_table_is_held_otherwise(
    citus_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table Citus already holds another way is refused before anything is distributed; a
    prefix with capitals works (names are quoted)."""
    prefix = f"Cd{uuid.uuid4().hex[:8]}_"
    quoted = {t: f'"{prefix}{t}"' for t in ("threads", "items", "attachments")}
    try:
        asyncio.run(migrate(citus_url, prefix=prefix))
        asyncio.run(
            run_sync(
                citus_url,
                lambda c: c.execute(
                    sa.text("SELECT create_reference_table(:t)"), {"t": quoted["attachments"]}
                ),
            )
        )
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 1
        err = capsys.readouterr().err
        assert "already distributed as a reference or local table" in err
        assert err.count("\n") == 1

        def held(conn: sa.Connection) -> dict[str, tuple[str | None, str | None]]:
            return {t: _distribution(conn, name) for t, name in quoted.items()}

        assert asyncio.run(run_sync(citus_url, held)) == {
            "threads": (None, None),
            "items": (None, None),
            "attachments": ("n", None),
        }, "nothing was distributed"
        asyncio.run(
            run_sync(
                citus_url,
                lambda c: c.exec_driver_sql(
                    f"SELECT undistribute_table('{quoted['attachments']}')"
                ),
            )
        )
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 0
        assert {m for m, _ in asyncio.run(run_sync(citus_url, held)).values()} == {"h"}
    finally:
        asyncio.run(drop_tables(citus_url, prefix))


def test_distribute_refuses_a_server_without_citus(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["distribute", postgres_url, "--table-prefix", "ckt_"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no Citus extension" in err


def test_distribute_needs_tenant_first_keys(
    citus_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"ck{uuid.uuid4().hex[:8]}_"
    try:
        asyncio.run(migrate(citus_url, "0002", prefix=prefix))
        assert cli(["distribute", citus_url, "--table-prefix", prefix]) == 1
        err = capsys.readouterr().err
        assert "primary key does not include tenant" in err and err.count("\n") == 1
        assert _colocation(citus_url, prefix) == {}, "nothing was distributed"
    finally:
        asyncio.run(drop_tables(citus_url, prefix))


# Routing: every tenant-scoped statement is one task on one shard


class Recorder:
    """The statements a store sends through asyncpg, with their arguments, per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[str, str, list[Any]]] = []  # (call, sql, args)
        self.names: set[str] = set()  # of the statements sent
        self.call = ""
        for method in ("fetch", "execute"):
            monkeypatch.setattr(PostgresDriver, method, self._wrap(getattr(PostgresDriver, method)))

    def _wrap(self, real: Any) -> Any:
        recorder = self

        async def recorded(driver: Any, statement: Any, values: dict[str, Any]) -> Any:
            recorder.sent.append((recorder.call, statement.sql, list(statement.args(values))))
            recorder.names.add(statement.name)
            return await real(driver, statement, values)

        return recorded


CROSS_TENANT = {"orphaned_attachments", "attachment_keys"}


async def _load_and_save(store: PostgresStore[Any], thread_id: str, ctx: Any) -> None:
    """A thread saved as loaded and changed: saved only if nobody saved it in between."""
    loaded = await store.load_thread(thread_id, ctx)
    loaded.title = "changed"  # the loaded object itself, as ChatKit's server changes it
    await store.save_thread(loaded, ctx)


"""Statements that read every tenant's rows (operator sweeps): they fan out to every shard."""


async def _workload(store: PostgresStore[Any], recorder: Recorder) -> None:
    """Every store method, for one tenant: what a ChatKit server calls (each page kind, order,
    with and without a cursor, past the end), and the per-tenant maintenance calls."""
    ctx = {"tenant_id": f"t_{uuid.uuid4().hex}"}
    tenant = ctx["tenant_id"]
    now = datetime.now(timezone.utc)
    long_ago = now - timedelta(days=30)
    thread = ThreadMetadata(id=store.generate_thread_id(ctx), created_at=now)
    old = ThreadMetadata(id=store.generate_thread_id(ctx), created_at=long_ago)
    items = [
        AssistantMessageItem(
            id=f"msg_{n}",
            thread_id=thread.id,
            created_at=now + timedelta(seconds=n),
            content=[AssistantMessageContent(text=str(n))],
        )
        for n in range(3)
    ]
    attachment = FileAttachment(id="atc_1", name="a.txt", mime_type="text/plain")
    orphan = FileAttachment(id="atc_2", name="b.txt", mime_type="text/plain")
    titled = thread.model_copy(update={"title": "titled"})
    last = items[-1].id
    pages: list[tuple[str, Any]] = [
        (
            f"load_{kind} {order} {after}",
            lambda kind=kind, order=order, after=after: (
                store.load_threads(1, after, order, ctx)
                if kind == "threads"
                else store.load_thread_items(thread.id, after, 1, order, ctx)
            ),
        )
        for kind, first_id, last_id in (
            ("threads", thread.id, old.id),
            ("thread_items", items[0].id, last),
        )
        for order in ("asc", "desc")
        for after in (None, first_id if order == "asc" else last_id, last_id)
    ]
    steps: list[tuple[str, Any]] = [
        ("save_thread", lambda: store.save_thread(thread, ctx)),
        ("save_thread old", lambda: store.save_thread(old, ctx)),
        ("save_thread again", lambda: store.save_thread(titled, ctx)),
        ("load_thread then save", lambda: _load_and_save(store, thread.id, ctx)),
        ("add_thread_item", lambda: store.add_thread_item(thread.id, items[0], ctx)),
        ("add_thread_item", lambda: store.add_thread_item(thread.id, items[1], ctx)),
        ("save_item", lambda: store.save_item(thread.id, items[2], ctx)),
        ("load_thread", lambda: store.load_thread(thread.id, ctx)),
        ("load_threads", lambda: store.load_threads(10, None, "desc", ctx)),
        ("load_threads after", lambda: store.load_threads(1, thread.id, "asc", ctx)),
        ("load_item", lambda: store.load_item(thread.id, "msg_1", ctx)),
        ("load_thread_items", lambda: store.load_thread_items(thread.id, None, 2, "asc", ctx)),
        (
            "load_thread_items after",
            lambda: store.load_thread_items(thread.id, "msg_0", 2, "desc", ctx),
        ),
        *pages,
        ("save_attachment", lambda: store.save_attachment(attachment, ctx)),
        ("save_attachment orphan", lambda: store.save_attachment(orphan, ctx)),
        ("load_attachment", lambda: store.load_attachment("atc_1", ctx)),
        (
            "update_attachment",
            lambda: store.update_attachment(
                tenant, "atc_1", lambda a: a.model_copy(update={"thread_id": thread.id})
            ),
        ),
        ("delete_orphan", lambda: store.delete_orphan("atc_2", ctx, now + timedelta(days=1))),
        ("delete_inactive_thread", lambda: store.delete_inactive_thread(old.id, ctx, now)),
        ("delete_thread_item", lambda: store.delete_thread_item(thread.id, "msg_0", ctx)),
        ("delete_attachment", lambda: store.delete_attachment("atc_1", ctx)),
        ("delete_thread", lambda: store.delete_thread(thread.id, ctx)),
    ]
    for call, step in steps:
        recorder.call = call
        await step()


async def _plans(url: str, sent: list[tuple[str, str, list[Any]]]) -> list[tuple[str, str, str]]:
    """``(call, sql, plan)`` of each recorded statement, explained with its own arguments."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        plans = []
        for call, sql, args in sent:
            rows = await conn.fetch(f"EXPLAIN {sql}", *args)
            plans.append((call, sql, "\n".join(row[0] for row in rows)))
        return plans
    finally:
        await conn.close()


def workload_plans(
    url: str, monkeypatch: pytest.MonkeyPatch, files: Path
) -> tuple[list[tuple[str, str, str]], set[str], set[str]]:
    """``(call, sql, plan)`` of every statement of ``_workload`` on a store of ``url``; the
    names of the statements sent, and of all the statements the store has."""
    recorder = Recorder(monkeypatch)

    async def run() -> tuple[list[tuple[str, str, str]], set[str]]:
        async with PostgresStore(url, table_prefix=PREFIX) as store:
            # A linked attachment store: delete_thread then reads the ids of the bytes to delete.
            DiskAttachmentStore(store, files, base_url="http://files.test", secret="s" * 32)
            await _workload(store, recorder)
            every = set(store.statements.every())
        monkeypatch.undo()
        return await _plans(url, recorder.sent), every

    plans, every = asyncio.run(run())
    return plans, recorder.names, every


def test_every_tenant_statement_runs_on_one_shard(
    citus_tables: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plans, sent, every = workload_plans(citus_tables, monkeypatch, tmp_path)
    assert every - CROSS_TENANT - sent == set(), "every tenant statement of the store was sent"
    assert sent & CROSS_TENANT == set()
    for call, sql, plan in plans:
        assert "Citus Adaptive" in plan, f"{call}: not a distributed plan\n{sql}\n{plan}"
        assert re.findall(r"Task Count: (\d+)", plan) == ["1"], f"{call}\n{sql}\n{plan}"


def test_delete_thread_is_a_single_shard_transaction(
    citus_tables: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its statements run on one worker, in co-located shards: no two-phase commit."""
    plans = [
        plan
        for plan in workload_plans(citus_tables, monkeypatch, tmp_path)[0]
        if plan[0] == "delete_thread"
    ]
    tables = {
        m for _, sql, _ in plans for m in re.findall(rf"{PREFIX}(threads|items|attachments)", sql)
    }
    assert tables == {"threads", "items", "attachments"}, "the thread, its items, attachments"
    nodes: set[str] = set()
    shards: set[int] = set()
    for _, sql, plan in plans:
        assert re.findall(r"Task Count: (\d+)", plan) == ["1"], f"{sql}\n{plan}"
        nodes.update(re.findall(r"Node: host=\S+ port=(\d+)", plan))
        shards.update(int(n) for n in re.findall(rf"{PREFIX}[a-z]+_(\d+)", plan))
    assert len(nodes) == 1, f"one worker, got {nodes}"

    def ranges(conn: sa.Connection) -> set[str]:
        found = conn.execute(
            sa.text("SELECT shardminvalue FROM pg_dist_shard WHERE shardid = ANY(:ids)"),
            {"ids": sorted(shards)},
        )
        return set(found.scalars())

    assert len(shards) == 3 and len(asyncio.run(run_sync(citus_tables, ranges))) == 1, (
        "one shard of each table, the same hash range: one shard group"
    )


# Sealing on Citus


def test_tenants_are_sealed_on_citus(
    citus_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/test_sealing.py's machine on distributed tables (its stores distribute theirs)."""
    import test_sealing

    made: list[str] = []
    create_schema = SQLStore.create_schema

    async def create_and_distribute(store: SQLStore[Any]) -> None:
        await create_schema(store)
        made.append(store.table_prefix)
        await run_sync(store.engine, lambda conn: distribute_tables(conn, store.table_prefix))

    monkeypatch.setattr(SQLStore, "create_schema", create_and_distribute)
    try:
        counter = test_sealing.seal("postgres", "disk", tmp_path, citus_url, None, 10)
    finally:
        for prefix in made:
            asyncio.run(drop_tables(citus_url, prefix))
    assert len(made) == 3 and counter.steps > 0
    assert {column for column, _ in _colocation(citus_url, made[0]).values()} in (set(), {"tenant"})


def test_the_citus_benchmark_prints_every_row(citus_url: str) -> None:
    """``python -m benchmarks.citus`` in miniature: every call of both targets is timed."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # benchmarks/ is a top-level package of the repository
        sys.path.insert(0, root)
    from benchmarks import citus as bench

    results = asyncio.run(bench.measure(citus_url, 2))
    table = bench.report(results)
    for call in (*bench.CALLS, "fan-out count"):
        assert f"| {call} |" in table
    assert _colocation(citus_url, bench.PREFIX) == {}, "its tables are dropped"
