"""A version on each thread, bumped by every save, for optimistic concurrency.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from chatkit_stores.migrations import table_prefix

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``threads.version`` (existing threads start at 0)."""
    column = sa.Column("version", sa.BigInteger(), nullable=False, server_default="0")
    op.add_column(f"{table_prefix()}threads", column)


def downgrade() -> None:
    """Drop ``threads.version``."""
    op.drop_column(f"{table_prefix()}threads", "version")
