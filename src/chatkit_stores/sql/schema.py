"""The one table set all SQL backends share.

Each table is keyed by tenant first. ``data`` holds the pydantic JSON, the source of truth;
the other columns exist only to find, filter and order rows (and a thread's ``version``, bumped
by every save, for optimistic concurrency). ``seq`` is an insertion counter
that breaks ties between equal ``created_at`` values and never changes on update, so an
updated row keeps its place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from .dialects import TABLE_OPTIONS, Blob, Key, Serial, Timestamp

DEFAULT_TABLE_PREFIX = "chatkit_"

IDENTIFIER_LIMITS = {"postgresql": 63, "mysql": 64}
"""The longest table, index or constraint name each server accepts (SQLite has no limit)."""

_SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB"}


@dataclass(frozen=True)
class Tables:
    """The threads, items and attachments tables for one table prefix."""

    metadata: MetaData
    threads: Table
    items: Table
    attachments: Table


def make_tables(prefix: str = DEFAULT_TABLE_PREFIX, backend: str | None = None) -> Tables:
    """Return the schema with every table and index name starting with ``prefix``.

    Raises ``ValueError`` for a prefix that is not ASCII letters, digits and ``_``, or that
    makes a name longer than ``backend``'s identifier limit (without ``backend``: the limit of
    every server, so that the same prefix works on each and ``copy`` can move tables between
    them).
    """
    if not prefix.replace("_", "").isalnum() or not prefix.isascii():
        raise ValueError(f"table_prefix must be ASCII letters, digits and '_', got {prefix!r}")
    _check_lengths(prefix, backend)
    return _tables(prefix)


def schema_names(prefix: str, backend: str) -> list[str]:
    """Every name the schema makes on ``backend``: tables, indexes, constraints, sequences.

    Besides what ``make_tables`` declares, the migrations' version table and, on PostgreSQL,
    the names the server derives (``_pkey``, the ``seq`` column's sequence), the version
    table's primary key (``_pkc``) and the Row-Level Security policies (``_tenant``).
    """
    tables = _tables(prefix)
    version = f"{prefix}stores_alembic_version"  # migrations.version_table(prefix)
    names = [version]
    for table in (tables.threads, tables.items, tables.attachments):
        names.append(table.name)
        names.extend(str(index.name) for index in table.indexes)
        names.extend(str(c.name) for c in table.constraints if isinstance(c.name, str))
        if backend == "postgresql":
            names += [f"{table.name}_pkey", f"{table.name}_seq_seq", f"{table.name}_tenant"]
    if backend == "postgresql":
        names.append(f"{version}_pkc")
    return names


def _check_lengths(prefix: str, backend: str | None) -> None:
    backends = [backend] if backend is not None else list(IDENTIFIER_LIMITS)
    for name in backends:
        limit = IDENTIFIER_LIMITS.get(name)
        if limit is None:
            continue
        longest = prefix + _longest_suffix(name)
        if len(longest) > limit:
            spare = limit - len(_longest_suffix(name))
            raise ValueError(
                f"table_prefix {prefix!r} is too long: it makes the name {longest!r} "
                f"({len(longest)} characters), over {_SERVER_NAMES[name]}'s limit of {limit}; "
                f"use at most {spare} characters"
            )


@functools.cache
def _longest_suffix(backend: str) -> str:
    """What the longest name adds to the prefix (every name is the prefix and a fixed suffix)."""
    return max(schema_names("", backend), key=len)


MYSQL = ("mysql", "mariadb")


def _tenant_first_key(prefix: str, table: str) -> tuple[PrimaryKeyConstraint, UniqueConstraint]:
    """The primary key ``(tenant, seq)``, and on MySQL/MariaDB ``seq`` unique on its own.

    Tenant first so that Citus can distribute the tables by tenant (a primary key must include
    the distribution column) and InnoDB clusters a tenant's rows together. InnoDB needs the
    AUTO_INCREMENT column to lead some index, hence ``{table}_seq`` there (a constraint, so
    that it is part of CREATE TABLE). SQLite keeps ``seq`` alone as its ``INTEGER PRIMARY KEY``
    (the rowid, the only column SQLite numbers by itself), which the migrations make whatever
    this model says: ``make_tables(...).metadata.create_all()`` works on PostgreSQL and
    MySQL/MariaDB, not on SQLite (use ``create_schema()``).
    """
    key = PrimaryKeyConstraint("tenant", "seq", name=f"{prefix}{table}_pkey")
    seq = UniqueConstraint("seq", name=f"{prefix}{table}_seq").ddl_if(dialect=MYSQL)  # type: ignore[arg-type]
    return key, seq


def _tables(prefix: str) -> Tables:
    metadata = MetaData()
    threads = Table(
        f"{prefix}threads",
        metadata,
        Column("seq", Serial, nullable=False, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        Column("version", BigInteger, nullable=False, server_default="0"),
        UniqueConstraint("tenant", "id", name=f"{prefix}threads_key"),
        Index(f"{prefix}threads_order", "tenant", "created_at", "seq"),
        *_tenant_first_key(prefix, "threads"),
        **TABLE_OPTIONS,
    )
    items = Table(
        f"{prefix}items",
        metadata,
        Column("seq", Serial, nullable=False, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("thread_id", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("type", String(64), nullable=False),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        UniqueConstraint("tenant", "thread_id", "id", name=f"{prefix}items_key"),
        Index(f"{prefix}items_order", "tenant", "thread_id", "created_at", "seq"),
        *_tenant_first_key(prefix, "items"),
        **TABLE_OPTIONS,
    )
    attachments = Table(
        f"{prefix}attachments",
        metadata,
        Column("seq", Serial, nullable=False, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("thread_id", Key(), nullable=True),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        UniqueConstraint("tenant", "id", name=f"{prefix}attachments_key"),
        Index(f"{prefix}attachments_thread", "tenant", "thread_id"),
        Index(f"{prefix}attachments_orphans", "thread_id", "created_at"),
        *_tenant_first_key(prefix, "attachments"),
        **TABLE_OPTIONS,
    )
    return Tables(metadata, threads, items, attachments)
