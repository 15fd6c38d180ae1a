"""``chatkit-stores distribute``: the three tables distributed by tenant on Citus, co-located.

Threads are distributed first; items and attachments are co-located with them, so the rows of
one tenant, in all three tables, live in shards on the same worker and a tenant's statement,
or a transaction of several (``delete_thread``), runs on one worker. Tables already distributed
by tenant are left as they are, so the command can be run again. The tables must be at
revision 0003 or later (primary keys led by the tenant, which Citus requires of a
distribution column).
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from . import OperationError

_NAMES = {"sqlite": "SQLite", "mysql": "MySQL/MariaDB"}

TABLES = ("threads", "items", "attachments")
"""In the order they are distributed: the first is the one the others are co-located with."""


def distribute_tables(connection: sa.Connection, prefix: str) -> list[str]:
    """Distribute the tables of ``prefix`` by tenant; return those this call distributed."""
    if connection.dialect.name != "postgresql" or not _has_citus(connection):
        raise OperationError(
            "this database has no Citus extension: distribute needs a Citus coordinator "
            "(PostgreSQL with CREATE EXTENSION citus); nothing was changed"
        )
    missing = [
        f"{prefix}{t}" for t in TABLES if not sa.inspect(connection).has_table(f"{prefix}{t}")
    ]
    if missing:
        raise OperationError(
            f"{', '.join(missing)} not found: run `chatkit-stores migrate URL` first; "
            "nothing was changed"
        )
    for table in TABLES:
        key = sa.inspect(connection).get_pk_constraint(f"{prefix}{table}")["constrained_columns"]
        if "tenant" not in key:
            raise OperationError(
                f"{prefix}{table}'s primary key does not include tenant: run "
                "`chatkit-stores migrate URL` (revision 0003) first; nothing was changed"
            )
    quote = connection.dialect.identifier_preparer.quote
    names = [quote(f"{prefix}{table}") for table in TABLES]  # as regclass text: case kept
    placed = {name: _distribution(connection, name) for name in names}
    for name, (method, column) in placed.items():
        if method is not None and (method, column) != ("h", "tenant"):
            how = f"by {column}" if column else "as a reference or local table"
            raise OperationError(
                f"{name} is already distributed {how}, not by tenant; nothing was changed"
            )
    done = []
    for name in names:
        if placed[name][0] is not None:
            continue  # already distributed by tenant
        colocate = "default" if name == names[0] else names[0]
        connection.execute(
            sa.text("SELECT create_distributed_table(:t, 'tenant', colocate_with => :c)"),
            {"t": name, "c": colocate},
        )
        done.append(name)
    return done


def _has_citus(connection: sa.Connection) -> bool:
    found = connection.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return found.first() is not None


def _distribution(connection: sa.Connection, table: str) -> tuple[str | None, str | None]:
    """How Citus holds ``table``: (method, column); (None, None) if it is not in Citus's
    metadata. Method ``h`` is hash-distributed; a reference or local table has no column."""
    found = connection.execute(
        sa.text(
            "SELECT partmethod::text, column_to_column_name(logicalrelid, partkey)"
            " FROM pg_dist_partition WHERE logicalrelid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).first()
    if found is None:
        return None, None
    return str(found[0]), None if found[1] is None else str(found[1])


def command(args: argparse.Namespace) -> int:
    """``distribute URL``: distribute the tables, print what was done."""
    import asyncio

    from ..sql import dialects
    from ..sql.schema import make_tables
    from .commands import database_url
    from .database import blame, safe_url

    url = database_url(args.url)
    prefix = args.table_prefix
    make_tables(prefix)  # a bad prefix is one line before anything connects
    backend = dialects.backend_of(dialects.async_url(url))
    if backend != "postgresql":
        raise OperationError(
            "distribute needs a Citus coordinator (PostgreSQL with CREATE EXTENSION citus), "
            f"not {_NAMES[backend]}; nothing was changed"
        )
    with blame(url):
        done = asyncio.run(_distribute(url, prefix))
    what = ", ".join(done) if done else "nothing to do, already distributed"
    print(f"{safe_url(url)}: distributed by tenant ({what})")
    return 0


async def _distribute(url: str, prefix: str) -> list[str]:
    """On one autocommit connection: Citus copies each table's rows in its own transaction."""
    from ..sql import dialects

    parsed = dialects.async_url(url)
    engine = dialects.create_engine(
        parsed, dialects.engine_options(parsed, {"poolclass": sa.NullPool})
    )
    try:
        async with engine.connect() as connection:
            done: list[str] = await connection.run_sync(distribute_tables, prefix)
            return done
    finally:
        await engine.dispose()
