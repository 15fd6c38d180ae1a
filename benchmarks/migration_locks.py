"""``python -m benchmarks.migration_locks URL``: what revision 0003 locks on big tables.

Makes tables of their own (prefix ``lk_``) at revision 0002, loads ``--rows`` items and a
twentieth as many threads and attachments server-side, then times ``migrate(URL, "0003")``
while a probe inserts one row into the items table every 5 ms and records its longest wait,
then ``downgrade(URL, "0002")``. ``--prebuilt`` (PostgreSQL) first builds the new keys'
indexes with ``CREATE UNIQUE INDEX CONCURRENTLY``, as docs/migrations.md advises for big
tables. The tables are dropped at the end. Figures: docs/migrations.md.
"""

from __future__ import annotations

import argparse
import asyncio
from time import perf_counter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chatkit_stores import migrations
from chatkit_stores.sql.dialects import async_url

PREFIX = "lk_"
TABLES = ("threads", "items", "attachments")
PROBE_PAUSE_S = 0.005


def _load_sql(postgres: bool, rows: int) -> list[str]:
    """INSERT ... SELECT statements that make the rows on the server."""
    source = f"generate_series(1, {rows}) AS s(n)" if postgres else f"seq_1_to_{rows} AS s"
    n = "n" if postgres else "seq"
    now = "now()" if postgres else "NOW(6)"

    def text(prefix: str, value: str) -> str:
        return f"CONCAT('{prefix}', {value})"

    tenant = text("t", f"MOD({n}, 10000)")
    few = f"{n} <= {rows // 20}"
    return [
        f"INSERT INTO {PREFIX}items (tenant, thread_id, id, type, created_at, data)"
        f" SELECT {tenant}, {text('thr_', f'MOD({n}, 50000)')}, {text('msg_', n)},"
        f" 'user_message', {now}, REPEAT('x', 400) FROM {source}",
        f"INSERT INTO {PREFIX}threads (tenant, id, created_at, data)"
        f" SELECT {tenant}, {text('thr_', n)}, {now}, REPEAT('x', 200) FROM {source} WHERE {few}",
        f"INSERT INTO {PREFIX}attachments (tenant, id, thread_id, created_at, data)"
        f" SELECT {tenant}, {text('atc_', n)}, NULL, {now}, REPEAT('x', 200)"
        f" FROM {source} WHERE {few}",
    ]


async def _drop(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in ("attachments", "items", "threads", "stores_alembic_version"):
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {PREFIX}{table}")


class Probe:
    """Inserts one row at a time into the items table; remembers the longest wait."""

    def __init__(self, engine: AsyncEngine, now: str) -> None:
        self.engine, self.now = engine, now
        self.longest, self.count, self.running = 0.0, 0, True

    async def run(self) -> None:
        """Insert until stopped."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while self.running:
                started = perf_counter()
                await conn.exec_driver_sql(
                    f"INSERT INTO {PREFIX}items (tenant, thread_id, id, type, created_at, data)"
                    f" VALUES ('probe', 'thr', 'p{self.count}', 'x', {self.now}, 'x')"
                )
                self.longest = max(self.longest, perf_counter() - started)
                self.count += 1
                await asyncio.sleep(PROBE_PAUSE_S)

    def reset(self) -> float:
        """The longest wait so far (then start over)."""
        longest, self.longest = self.longest, 0.0
        return longest


async def measure(url: str, rows: int, prebuilt: bool) -> dict[str, Any]:
    """Seconds and longest probe waits of the load, the index builds, upgrade and downgrade."""
    engine = create_async_engine(async_url(url))
    probe_engine = create_async_engine(async_url(url))
    postgres = engine.dialect.name == "postgresql"
    result: dict[str, Any] = {"rows": rows}
    try:
        await _drop(engine)
        await migrations.migrate(url, "0002", prefix=PREFIX)
        started = perf_counter()
        async with engine.begin() as conn:
            for statement in _load_sql(postgres, rows):
                await conn.exec_driver_sql(statement)
        if postgres:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql(f"VACUUM ANALYZE {PREFIX}items")
        result["load_s"] = perf_counter() - started
        probe = Probe(probe_engine, "now()" if postgres else "NOW(6)")
        task = asyncio.create_task(probe.run())
        try:
            if prebuilt:
                started = perf_counter()
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    for table in TABLES:
                        await conn.exec_driver_sql(
                            f"CREATE UNIQUE INDEX CONCURRENTLY {PREFIX}{table}_tenant_seq"
                            f" ON {PREFIX}{table} (tenant, seq)"
                        )
                result["prebuild_s"] = perf_counter() - started
                result["prebuild_longest_wait_s"] = probe.reset()
            probe.reset()
            started = perf_counter()
            await migrations.migrate(url, "0003", prefix=PREFIX)
            result["upgrade_s"] = perf_counter() - started
            result["upgrade_longest_wait_s"] = probe.reset()
            result["probes"] = probe.count
        finally:
            probe.running = False
            await task
        started = perf_counter()
        await migrations.downgrade(url, "0002", prefix=PREFIX)
        result["downgrade_s"] = perf_counter() - started
    finally:
        await _drop(engine)
        await engine.dispose()
        await probe_engine.dispose()
    return result


def main() -> None:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.migration_locks", description=__doc__)
    p.add_argument("url", help="a PostgreSQL or MySQL/MariaDB database (tables lk_*)")
    p.add_argument("--rows", type=int, default=1_000_000, help="items (default 1,000,000)")
    p.add_argument("--prebuilt", action="store_true", help="PostgreSQL: build indexes first")
    args = p.parse_args()
    result = asyncio.run(measure(args.url, args.rows, args.prebuilt))
    for name, value in result.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
