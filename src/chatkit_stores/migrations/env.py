"""Alembic environment of chatkit-stores: runs on the connection or URL the API hands it."""

from __future__ import annotations

from alembic import context

from chatkit_stores.migrations import settings

config = context.config
prefix, version_table = settings(config)

if context.is_offline_mode():
    context.configure(
        url=config.attributes["url"],
        version_table=version_table,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(
        connection=config.attributes["connection"],
        version_table=version_table,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
