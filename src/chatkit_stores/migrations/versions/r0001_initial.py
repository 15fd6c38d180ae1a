"""The first schema: threads, items and attachments, keyed by tenant.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatkit_stores.migrations import table_prefix
from chatkit_stores.sql.dialects import TABLE_OPTIONS, Blob, Key, Serial, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three tables and their indexes."""
    p = table_prefix()
    op.create_table(
        f"{p}threads",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("tenant", Key(), nullable=False),
        sa.Column("id", Key(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("data", Blob, nullable=False),
        sa.UniqueConstraint("tenant", "id", name=f"{p}threads_key"),
        **TABLE_OPTIONS,
    )
    op.create_index(f"{p}threads_order", f"{p}threads", ["tenant", "created_at", "seq"])
    op.create_table(
        f"{p}items",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("tenant", Key(), nullable=False),
        sa.Column("thread_id", Key(), nullable=False),
        sa.Column("id", Key(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("data", Blob, nullable=False),
        sa.UniqueConstraint("tenant", "thread_id", "id", name=f"{p}items_key"),
        **TABLE_OPTIONS,
    )
    op.create_index(f"{p}items_order", f"{p}items", ["tenant", "thread_id", "created_at", "seq"])
    op.create_table(
        f"{p}attachments",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("tenant", Key(), nullable=False),
        sa.Column("id", Key(), nullable=False),
        sa.Column("thread_id", Key(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("data", Blob, nullable=False),
        sa.UniqueConstraint("tenant", "id", name=f"{p}attachments_key"),
        **TABLE_OPTIONS,
    )
    op.create_index(f"{p}attachments_thread", f"{p}attachments", ["tenant", "thread_id"])
    op.create_index(f"{p}attachments_orphans", f"{p}attachments", ["thread_id", "created_at"])


def downgrade() -> None:
    """Drop the three tables."""
    p = table_prefix()
    for table in ("attachments", "items", "threads"):
        op.drop_table(f"{p}{table}")
