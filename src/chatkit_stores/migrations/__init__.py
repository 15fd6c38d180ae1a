"""Alembic migrations of the chatkit-stores schema, shipped in the package.

They keep their own version table (``{prefix}stores_alembic_version``, by default
``chatkit_stores_alembic_version``), so they live beside an application's own Alembic history
without touching its ``alembic_version``. Run them with ``chatkit-stores migrate URL``, with
``await migrate(engine_or_url)``, or from your own ``env.py`` with :func:`upgrade_with`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..sql import dialects
from ..sql.schema import DEFAULT_TABLE_PREFIX, make_tables

HERE = Path(__file__).parent
TABLES = ("threads", "items", "attachments")


class MigrationError(RuntimeError):
    """The database cannot be migrated as asked; nothing was changed."""


def version_table(prefix: str = DEFAULT_TABLE_PREFIX) -> str:
    """The name of the version table of the tables with ``prefix``."""
    return f"{prefix}stores_alembic_version"


def table_prefix() -> str:
    """The table prefix of the running migration (for use inside revision scripts)."""
    from alembic import context

    return str(context.config.attributes["table_prefix"])


def settings(config: Config) -> tuple[str, str]:
    """``(table prefix, version table)`` of a config made by :func:`alembic_config`."""
    prefix = config.attributes["table_prefix"]
    return prefix, version_table(prefix)


def alembic_config(prefix: str = DEFAULT_TABLE_PREFIX, **attributes: Any) -> Config:
    """An Alembic ``Config`` for the shipped scripts and tables with ``prefix``."""
    make_tables(prefix)  # validates the prefix
    config = Config(stdout=attributes.pop("stdout", None) or io.StringIO())
    config.set_main_option("script_location", str(HERE))
    config.attributes.update(table_prefix=prefix, **attributes)
    return config


def scripts() -> ScriptDirectory:
    """The shipped revision scripts."""
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision."""
    revision = scripts().get_current_head()
    assert revision is not None
    return revision


def history() -> list[tuple[str, str]]:
    """``(revision, message)`` of every shipped revision, oldest first."""
    return [(s.revision, s.doc) for s in reversed(list(scripts().walk_revisions()))]


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """An ``include_name`` filter for *your* ``env.py``: autogenerate ignores our tables."""
    if type_ != "table" or name is None:
        return True
    return not (name.endswith("stores_alembic_version") or name.endswith(TABLES))


def upgrade_with(
    connection: sa.Connection, revision: str = "head", *, prefix: str = DEFAULT_TABLE_PREFIX
) -> None:
    """Upgrade our tables on an open (sync) connection, e.g. from your own ``env.py``."""
    _refuse_foreign_tables(connection, prefix)
    command.upgrade(alembic_config(prefix, connection=connection), revision)


async def migrate(
    target: AsyncEngine | str | URL, revision: str = "head", *, prefix: str = DEFAULT_TABLE_PREFIX
) -> None:
    """Upgrade the database to ``revision`` (default: the newest)."""
    await run_sync(target, lambda conn: upgrade_with(conn, revision, prefix=prefix))


async def downgrade(
    target: AsyncEngine | str | URL, revision: str, *, prefix: str = DEFAULT_TABLE_PREFIX
) -> None:
    """Downgrade to ``revision`` (``base`` drops every chatkit-stores table)."""

    def work(conn: sa.Connection) -> None:
        command.downgrade(alembic_config(prefix, connection=conn), revision)
        if revision == "base":  # leave nothing of ours behind
            sa.Table(version_table(prefix), sa.MetaData()).drop(conn, checkfirst=True)

    await run_sync(target, work)


async def stamp(
    target: AsyncEngine | str | URL, revision: str, *, prefix: str = DEFAULT_TABLE_PREFIX
) -> None:
    """Record ``revision`` as current without running anything."""
    await run_sync(
        target, lambda conn: command.stamp(alembic_config(prefix, connection=conn), revision)
    )


async def current(
    target: AsyncEngine | str | URL, *, prefix: str = DEFAULT_TABLE_PREFIX
) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    revision: str | None = await run_sync(target, lambda conn: _current(conn, prefix))
    return revision


def offline_sql(
    action: str, url: str | URL, revision: str, *, prefix: str = DEFAULT_TABLE_PREFIX
) -> str:
    """The SQL of ``upgrade``/``downgrade`` to ``revision``, for a DBA, without connecting."""
    buffer = io.StringIO()
    config = alembic_config(prefix, url=dialects.async_url(url), output_buffer=buffer)
    config.output_buffer = buffer
    if action == "upgrade":
        command.upgrade(config, revision, sql=True)
    else:
        command.downgrade(config, revision, sql=True)
    return buffer.getvalue()


def _current(connection: sa.Connection, prefix: str) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": version_table(prefix)})
    return context.get_current_revision()


def _refuse_foreign_tables(connection: sa.Connection, prefix: str) -> None:
    if _current(connection, prefix) is not None:
        return
    existing = set(sa.inspect(connection).get_table_names())
    ours = [f"{prefix}{name}" for name in TABLES if f"{prefix}{name}" in existing]
    if ours:
        raise MigrationError(
            f"Tables {', '.join(ours)} exist but were not made by chatkit-stores migrations "
            f"(no {version_table(prefix)} row). Use another table prefix, or if they are "
            "chatkit-stores tables of the first schema, record that with "
            "`chatkit-stores stamp URL 0001`."
        )


async def run_sync(target: AsyncEngine | str | URL, work: Callable[[sa.Connection], Any]) -> Any:
    """Run ``work(sync_connection)`` (e.g. an Alembic command) in one real transaction."""
    engine = target if isinstance(target, AsyncEngine) else None
    if engine is None:
        url = dialects.async_url(target)  # type: ignore[arg-type]
        engine = dialects.create_engine(
            url, dialects.engine_options(url, {"poolclass": sa.NullPool})
        )
    try:
        async with engine.connect() as conn:
            level = dialects.TRANSACTION_ISOLATION[dialects.backend_of(engine.url)]
            conn = await conn.execution_options(isolation_level=level)
            result = await conn.run_sync(work)
            await _commit(conn)
            return result
    finally:
        if engine is not target:
            await engine.dispose()


async def _commit(conn: AsyncConnection) -> None:
    if conn.in_transaction():
        await conn.commit()
