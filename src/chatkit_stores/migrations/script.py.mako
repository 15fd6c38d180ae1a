"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from alembic import op

from chatkit_stores.migrations import table_prefix

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade."""
    prefix = table_prefix()
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade."""
    prefix = table_prefix()
    ${downgrades if downgrades else "pass"}
