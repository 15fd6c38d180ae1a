"""The one table set all SQL backends share.

Each table is keyed by tenant first. ``data`` holds the pydantic JSON, the source of truth;
the other columns exist only to find, filter and order rows (and a thread's ``version``, bumped
by every save, for optimistic concurrency). ``seq`` is an insertion counter
that breaks ties between equal ``created_at`` values and never changes on update, so an
updated row keeps its place.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, UniqueConstraint

from .dialects import TABLE_OPTIONS, Blob, Key, Serial, Timestamp

DEFAULT_TABLE_PREFIX = "chatkit_"


@dataclass(frozen=True)
class Tables:
    """The threads, items and attachments tables for one table prefix."""

    metadata: MetaData
    threads: Table
    items: Table
    attachments: Table


def make_tables(prefix: str = DEFAULT_TABLE_PREFIX) -> Tables:
    """Return the schema with every table and index name starting with ``prefix``."""
    if not prefix.replace("_", "").isalnum() or not prefix.isascii():
        raise ValueError(f"table_prefix must be ASCII letters, digits and '_', got {prefix!r}")
    metadata = MetaData()
    threads = Table(
        f"{prefix}threads",
        metadata,
        Column("seq", Serial, primary_key=True, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        Column("version", BigInteger, nullable=False, server_default="0"),
        UniqueConstraint("tenant", "id", name=f"{prefix}threads_key"),
        Index(f"{prefix}threads_order", "tenant", "created_at", "seq"),
        **TABLE_OPTIONS,
    )
    items = Table(
        f"{prefix}items",
        metadata,
        Column("seq", Serial, primary_key=True, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("thread_id", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("type", String(64), nullable=False),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        UniqueConstraint("tenant", "thread_id", "id", name=f"{prefix}items_key"),
        Index(f"{prefix}items_order", "tenant", "thread_id", "created_at", "seq"),
        **TABLE_OPTIONS,
    )
    attachments = Table(
        f"{prefix}attachments",
        metadata,
        Column("seq", Serial, primary_key=True, autoincrement=True),
        Column("tenant", Key(), nullable=False),
        Column("id", Key(), nullable=False),
        Column("thread_id", Key(), nullable=True),
        Column("created_at", Timestamp, nullable=False),
        Column("data", Blob, nullable=False),
        UniqueConstraint("tenant", "id", name=f"{prefix}attachments_key"),
        Index(f"{prefix}attachments_thread", "tenant", "thread_id"),
        Index(f"{prefix}attachments_orphans", "thread_id", "created_at"),
        **TABLE_OPTIONS,
    )
    return Tables(metadata, threads, items, attachments)
