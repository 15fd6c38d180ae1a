"""Alembic migrations of the chatkit-stores schema, shipped in the package.

They keep their own version table (``{prefix}stores_alembic_version``, by default
``chatkit_stores_alembic_version``), so they live beside an application's own Alembic history
without touching its ``alembic_version``. Run them with ``chatkit-stores migrate URL``, with
``await migrate(engine_or_url)``, or from your own ``env.py`` with ``upgrade_with``.

Before they change anything, ``migrate``, ``stamp`` and ``downgrade`` check that existing
tables with the prefix have the columns of the revision recorded (or being stamped), so that
another application's ``chatkit_threads`` is never altered, adopted or dropped (``shape``).

Every function takes ``version_locations``: directories of further revision scripts used
together with the shipped ones (their first revision must revise the shipped head). The test
suite uses it to prove a second revision upgrades and downgrades with the data intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..sql import dialects
from ..sql.schema import DEFAULT_TABLE_PREFIX, make_tables
from . import shape
from .row_security import set_row_security

HERE = Path(__file__).parent
TABLES = shape.TABLES
LOCK_TIMEOUT_S = 600
"""How long a migration waits for another one of the same tables to finish (MySQL/MariaDB)."""

VersionLocations = Sequence["str | os.PathLike[str]"]


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


def alembic_config(
    prefix: str = DEFAULT_TABLE_PREFIX,
    *,
    version_locations: VersionLocations = (),
    **attributes: Any,
) -> Config:
    """An Alembic ``Config`` for the shipped scripts (plus ``version_locations``) and ``prefix``."""
    make_tables(prefix)  # validates the prefix
    config = Config(stdout=attributes.pop("stdout", None) or io.StringIO())
    config.set_main_option("script_location", str(HERE))
    locations = [str(HERE / "versions"), *(os.fspath(path) for path in version_locations)]
    # "path_separator" since Alembic 1.16, "version_path_separator" before.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes.update(table_prefix=prefix, **attributes)
    return config


def scripts(*, version_locations: VersionLocations = ()) -> ScriptDirectory:
    """The shipped revision scripts (plus those in ``version_locations``)."""
    return ScriptDirectory.from_config(alembic_config(version_locations=version_locations))


def head(*, version_locations: VersionLocations = ()) -> str:
    """The newest revision."""
    revision = scripts(version_locations=version_locations).get_current_head()
    assert revision is not None
    return revision


def history(*, version_locations: VersionLocations = ()) -> list[tuple[str, str]]:
    """``(revision, message)`` of every shipped revision, oldest first."""
    walk = scripts(version_locations=version_locations).walk_revisions()
    return [(s.revision, s.doc) for s in reversed(list(walk))]


def include_name_for(
    prefix: str = DEFAULT_TABLE_PREFIX, *more: str
) -> Callable[[str | None, str, Any], bool]:
    """An ``include_name`` filter that hides the chatkit-stores tables of these prefixes."""
    prefixes = (prefix, *more)
    ours = {version_table(p) for p in prefixes} | {f"{p}{t}" for p in prefixes for t in TABLES}

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        """Whether Alembic autogenerate should look at ``name`` (not at our tables)."""
        return type_ != "table" or name not in ours

    return include_name


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """An ``include_name`` filter for *your* ``env.py``: autogenerate ignores our tables.

    It hides the tables of the default prefix (``chatkit_threads``, ``chatkit_items``,
    ``chatkit_attachments``, ``chatkit_stores_alembic_version``) and nothing else; for other
    prefixes use ``include_name_for(prefix, ...)``.
    """
    return _default_include_name(name, type_, parent_names)


_default_include_name = include_name_for(DEFAULT_TABLE_PREFIX)


def upgrade_with(
    connection: sa.Connection,
    revision: str = "head",
    *,
    prefix: str = DEFAULT_TABLE_PREFIX,
    version_locations: VersionLocations = (),
) -> None:
    """Upgrade our tables on an open (sync) connection, e.g. from your own ``env.py``.

    Given a connection outside a transaction (as in Alembic's ``env.py`` templates), each
    revision runs in its own transaction and is committed, and the connection is handed back
    outside a transaction, ready for your own migrations. Given one inside a transaction,
    everything runs in it and you commit (a revision that builds an index online, outside any
    transaction, then fails).
    """
    config = alembic_config(prefix, connection=connection, version_locations=version_locations)
    with _migrating(connection, prefix) as own:
        _refuse_foreign_tables(connection, prefix)
        current = _current(connection, prefix)
        if current is not None and current not in _revisions(config, revision):
            _check_shape(connection, prefix, current, config)
        _end_our_transaction(connection, own)
        command.upgrade(config, revision)


_IN_PROCESS = threading.Lock()
"""Alembic keeps the running command in module globals (``alembic.context``, ``alembic.op``):
two commands interleaved in one process (coroutines of one event loop, or threads) would run
each other's scripts. Migrations of one process therefore take turns."""


async def _run_alone(
    target: AsyncEngine | str | URL, prefix: str, work: Callable[[sa.Connection], None]
) -> None:
    """Run ``work`` on ``target`` once no other migration of this process runs (see above)."""
    make_tables(prefix)  # a bad prefix is refused before anything connects
    # A thread lock polled, not awaited: an asyncio primitive cannot cover other threads' loops,
    # and blocking in acquire() would stall this loop, whose coroutine may hold the lock.
    while not _IN_PROCESS.acquire(blocking=False):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        await run_sync(target, work)
    finally:
        _IN_PROCESS.release()


async def migrate(
    target: AsyncEngine | str | URL,
    revision: str = "head",
    *,
    prefix: str = DEFAULT_TABLE_PREFIX,
    version_locations: VersionLocations = (),
    row_level_security: bool | None = None,
) -> None:
    """Upgrade the database to ``revision`` (default: the newest).

    ``row_level_security`` (PostgreSQL): True creates the tenant policies (see
    ``row_security``), False drops them, None leaves them as they are.
    """

    def work(conn: sa.Connection) -> None:
        upgrade_with(conn, revision, prefix=prefix, version_locations=version_locations)
        if row_level_security is not None:
            set_row_security(conn, prefix, row_level_security)

    await _run_alone(target, prefix, work)


async def downgrade(
    target: AsyncEngine | str | URL,
    revision: str,
    *,
    prefix: str = DEFAULT_TABLE_PREFIX,
    version_locations: VersionLocations = (),
) -> None:
    """Downgrade to ``revision`` (``base`` drops every chatkit-stores table)."""

    def work(conn: sa.Connection) -> None:
        config = alembic_config(prefix, connection=conn, version_locations=version_locations)
        with _migrating(conn, prefix) as own:
            current = _current(conn, prefix)
            if current is not None:
                _check_shape(conn, prefix, current, config)
            _end_our_transaction(conn, own)
            command.downgrade(config, revision)
            if revision == "base":  # leave nothing of ours behind
                sa.Table(version_table(prefix), sa.MetaData()).drop(conn, checkfirst=True)

    await _run_alone(target, prefix, work)


async def stamp(
    target: AsyncEngine | str | URL,
    revision: str,
    *,
    prefix: str = DEFAULT_TABLE_PREFIX,
    version_locations: VersionLocations = (),
) -> None:
    """Record ``revision`` as current without running anything.

    The tables must already have that revision's columns (any revision but ``base``): stamping
    someone else's tables, or tables that are not there, is refused with ``MigrationError``.
    """

    def work(conn: sa.Connection) -> None:
        config = alembic_config(prefix, connection=conn, version_locations=version_locations)
        with _migrating(conn, prefix) as own:
            for target in _revisions(config, revision):
                _check_shape(conn, prefix, target, config)
            _end_our_transaction(conn, own)
            command.stamp(config, revision)

    await _run_alone(target, prefix, work)


async def current(
    target: AsyncEngine | str | URL, *, prefix: str = DEFAULT_TABLE_PREFIX
) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    make_tables(prefix)  # a bad prefix is refused before anything connects
    revision: str | None = await run_sync(target, lambda conn: _current(conn, prefix))
    return revision


def offline_sql(
    action: str,
    url: str | URL,
    revision: str,
    *,
    prefix: str = DEFAULT_TABLE_PREFIX,
    version_locations: VersionLocations = (),
) -> str:
    """The SQL of ``upgrade``/``downgrade`` to ``revision``, for a DBA, without connecting.

    Without a database to ask, an upgrade starts from nothing and a downgrade from the newest
    revision; give ``FROM:TO`` (e.g. ``0002:0001``) to start elsewhere.
    """
    buffer = io.StringIO()
    config = alembic_config(
        prefix,
        url=dialects.async_url(url),
        output_buffer=buffer,
        version_locations=version_locations,
    )
    config.output_buffer = buffer
    with _alembic_errors():
        if action == "upgrade":
            command.upgrade(config, revision, sql=True)
        elif action == "downgrade":
            command.downgrade(config, revision if ":" in revision else f"head:{revision}", sql=True)
        else:
            raise ValueError(f"action must be 'upgrade' or 'downgrade', got {action!r}")
    if action == "downgrade" and revision.rpartition(":")[2] == "base":
        # As online: nothing of ours is left (Alembic >= 1.16 keeps the version table).
        table = sa.Table(version_table(prefix), sa.MetaData())
        dialect = dialects.async_url(url).get_dialect()()
        buffer.write(f"{str(sa.schema.DropTable(table).compile(dialect=dialect)).strip()};\n\n")
    return buffer.getvalue()


@contextlib.contextmanager
def _migrating(connection: sa.Connection, prefix: str) -> Iterator[bool]:
    """One migration of ``prefix`` at a time; Alembic's refusals become :class:`MigrationError`.

    Two processes migrating the same new database at once (say, every replica calling
    ``create_schema()`` at start-up) would both find no version table and both create the
    tables; a lock on the server makes the second wait, then find the first one's work.

    Yields whether the transactions are ours: on a connection outside a transaction, what we
    begin is committed before Alembic runs (so Alembic commits each revision itself, and can
    leave a transaction for an online index build) and after; inside one, the caller commits.
    """
    own = not connection.in_transaction()
    lock = _Lock(connection, prefix, session=own)
    lock.acquire()
    new = False  # whether the version table is ours to drop if the migration fails
    try:
        new = not sa.inspect(connection).has_table(version_table(prefix))
        _end_our_transaction(connection, own)
        with _alembic_errors(), _outer_alembic_kept():
            yield own
        _end_our_transaction(connection, own)
    except BaseException:
        _undo_failed(connection, prefix, own=own, new=new)
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            lock.release()
            _end_our_transaction(connection, own)
        raise
    lock.release()
    _end_our_transaction(connection, own)


def _undo_failed(connection: sa.Connection, prefix: str, *, own: bool, new: bool) -> None:
    """After a failed migration: roll back, and drop a version table it made and left empty.

    Errors here are suppressed: the migration's own error is the one to report.
    """
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        if own and connection.in_transaction():
            connection.rollback()
        if new:  # Alembic made it before failing (DDL is not undone on MySQL, SQLite)
            _drop_if_empty(connection, version_table(prefix))
            _end_our_transaction(connection, own)


def _drop_if_empty(connection: sa.Connection, name: str) -> None:
    if not sa.inspect(connection).has_table(name):
        return
    table = sa.Table(name, sa.MetaData(), sa.Column("version_num", sa.String(32)))
    if connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0:
        table.drop(connection)


def _end_our_transaction(connection: sa.Connection, own: bool) -> None:
    if own and connection.in_transaction():
        connection.commit()


class _Lock:
    """A server-side lock named after the version table (PostgreSQL, MySQL/MariaDB).

    On PostgreSQL it is held by the session when we own the transactions, else by the
    caller's transaction (and ends with it). SQLite has none: two processes migrating one new
    file at the same moment can still collide (docs/migrations.md says so).
    """

    def __init__(self, connection: sa.Connection, prefix: str, *, session: bool) -> None:
        self.connection = connection
        self.dialect = dialects.backend_of(connection.engine.url)
        self.session = session
        self.table = version_table(prefix)
        digest = hashlib.sha256(self.table.encode())
        self.key = int.from_bytes(digest.digest()[:8], "big", signed=True)
        self.name = f"chatkit_stores:{digest.hexdigest()[:40]}"  # MySQL allows 64 characters

    def acquire(self) -> None:
        """Wait for the lock."""
        if self.dialect == "postgresql":
            function = "pg_advisory_lock" if self.session else "pg_advisory_xact_lock"
            self.connection.execute(sa.text(f"SELECT {function}(:key)"), {"key": self.key})
        elif self.dialect == "mysql":
            got = self.connection.execute(
                sa.text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": self.name, "timeout": LOCK_TIMEOUT_S},
            ).scalar()
            if got != 1:
                raise MigrationError(
                    f"Another migration of the tables of {self.table} has been running for "
                    f"over {LOCK_TIMEOUT_S} s; nothing was changed"
                )

    def release(self) -> None:
        """Let the next migration go."""
        if self.dialect == "postgresql" and self.session:
            self.connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        elif self.dialect == "mysql":
            self.connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self.name})


@contextlib.contextmanager
def _alembic_errors() -> Iterator[None]:
    """Alembic's refusals (unknown revision, bad range...) as :class:`MigrationError`."""
    try:
        yield
    except (CommandError, RevisionError) as error:
        raise MigrationError(f"Cannot migrate: {error}") from error


@contextlib.contextmanager
def _outer_alembic_kept() -> Iterator[None]:
    """Keep the ``alembic.context`` and ``alembic.op`` of a caller's ``env.py`` working.

    Alembic installs those module proxies for the command it runs and removes them when it
    ends; run inside your own ``env.py`` (:func:`upgrade_with`), our command would otherwise
    leave your ``context.configure(...)`` pointing at nothing.
    """
    from alembic import context, op

    outer = [getattr(module, "_proxy", None) for module in (context, op)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


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
            f"(no {version_table(prefix)} row); nothing was changed: "
            f"{shape.advice(connection, prefix)}."
        )


def _revisions(config: Config, revision: str) -> set[str]:
    """The revision ids ``revision`` names (``head``, an id...); empty for ``base``."""
    with _alembic_errors():
        found = ScriptDirectory.from_config(config).get_revisions(revision)
    return {script.revision for script in found if script is not None}


def _check_shape(connection: sa.Connection, prefix: str, revision: str, config: Config) -> None:
    """Refuse to touch tables of ``prefix`` without the columns of ``revision``."""
    why = shape.refusal(connection, prefix, revision, ScriptDirectory.from_config(config))
    if why is not None:
        raise MigrationError(why)


async def run_sync(target: AsyncEngine | str | URL, work: Callable[[sa.Connection], Any]) -> Any:
    """Run ``work(sync_connection)`` (e.g. an Alembic command) on one connection, committed."""
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
