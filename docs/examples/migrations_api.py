"""Migrations from Python: an engine of yours or a URL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

# --8<-- [start:api]
from chatkit_stores.migrations import current, downgrade, migrate


async def release_step(engine: AsyncEngine) -> None:
    await migrate(engine)  # or migrate("postgresql://app@db/app"): upgrade to the newest
    print(await current(engine))  # "0001", or None before the first migration


# --8<-- [end:api]


async def second_prefix(engine: AsyncEngine, url: str) -> None:
    """A second set of tables in the same database, then dropped again."""
    from chatkit_stores import SQLStore

    # --8<-- [start:prefix]
    await migrate(
        engine, prefix="support_"
    )  # its own version table: support_stores_alembic_version
    store = SQLStore.from_url(url, table_prefix="support_")  # the same prefix everywhere
    # --8<-- [end:prefix]
    await store.close()
    await downgrade(engine, "base", prefix="support_")  # base drops the tables and their data
