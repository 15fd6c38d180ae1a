"""Tenant-first primary keys: (tenant, seq), so that the tables can be distributed by tenant.

Citus refuses to distribute a table by ``tenant`` while its primary key is ``seq`` alone (a
primary key must include the distribution column). PostgreSQL and MySQL/MariaDB get
``PRIMARY KEY (tenant, seq)``; MySQL/MariaDB also a unique key on ``seq``, because InnoDB needs
the AUTO_INCREMENT column to lead some index. SQLite keeps ``seq`` alone as its ``INTEGER PRIMARY
KEY``: SQLite numbers only that column (the rowid), and nothing distributes a SQLite file.

PostgreSQL builds each new primary key index under an ACCESS EXCLUSIVE lock (reads and writes
of that table wait), unless ``{table}_tenant_seq`` was built beforehand with CREATE UNIQUE INDEX
CONCURRENTLY, which the upgrade then adopts in milliseconds; MySQL/MariaDB rebuilds each table
in place with LOCK=NONE (reads and writes go on, a metadata lock is taken briefly at the start
and the end). docs/migrations.md gives the durations measured on a million rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatkit_stores.migrations import table_prefix

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("threads", "items", "attachments")


def upgrade() -> None:
    """Make ``(tenant, seq)`` the primary key of the three tables (not on SQLite)."""
    _set_keys(("tenant", "seq"))


def downgrade() -> None:
    """Make ``seq`` alone the primary key again (not on a table Citus distributed)."""
    _set_keys(("seq",))


def _set_keys(columns: tuple[str, ...]) -> None:
    dialect = op.get_context().dialect
    quote = dialect.identifier_preparer.quote
    key = ", ".join(quote(column) for column in columns)
    for name in TABLES:
        table = f"{table_prefix()}{name}"
        if dialect.name == "postgresql":
            pkey = quote(f"{table}_pkey")
            built = prebuilt(table) if "tenant" in columns else None
            new_key = f"USING INDEX {quote(built)}" if built else f"({key})"
            op.execute(
                f"ALTER TABLE {quote(table)} DROP CONSTRAINT {pkey},"
                f" ADD CONSTRAINT {pkey} PRIMARY KEY {new_key}"
            )
        elif dialect.name in ("mysql", "mariadb"):
            seq_index = quote(f"{table}_seq")
            index = f"ADD UNIQUE KEY {seq_index} (seq)" if "tenant" in columns else None
            changes = [
                index,
                "DROP PRIMARY KEY",
                f"ADD PRIMARY KEY ({key})",
                None if index else f"DROP INDEX {seq_index}",
                "ALGORITHM=INPLACE, LOCK=NONE",
            ]
            op.execute(f"ALTER TABLE {quote(table)} {', '.join(c for c in changes if c)}")


def prebuilt(table: str) -> str | None:
    """``{table}_tenant_seq`` if a DBA built it beforehand (PostgreSQL, online runs only).

    ``CREATE UNIQUE INDEX CONCURRENTLY {table}_tenant_seq ON {table} (tenant, seq)`` builds the
    new key's index while reads and writes go on; the upgrade then only swaps the keys, a
    lock of milliseconds instead of one held while the whole index is built.
    """
    context = op.get_context()
    if context.as_sql:
        return None
    quote = context.dialect.identifier_preparer.quote
    name = f"{table}_tenant_seq"
    valid = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT i.indisvalid AND i.indisunique AND i.indnatts = 2"
                " AND pg_get_indexdef(i.indexrelid) LIKE '%(tenant, seq)'"
                " FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"
                " AND i.indrelid = to_regclass(:table)"
            ),
            {"name": quote(name), "table": quote(table)},
        )
        .scalar()
    )
    return name if valid else None
