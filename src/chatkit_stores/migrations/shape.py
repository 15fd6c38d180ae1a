"""The columns of the chatkit-stores tables at each shipped revision, checked before a change.

``stamp``, ``migrate`` and ``downgrade`` write to tables named after a prefix that someone else's
tables may share (a ``chatkit_threads (id, name)`` of another app, or tables a crash left
half-made). Before they touch anything they check that the tables have the columns of the
revision the database is (or is being stamped) at, and refuse with :class:`MigrationError`
otherwise. Only column names are compared: a table with extra columns of your own passes.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic.script import ScriptDirectory

TABLES = ("threads", "items", "attachments")

ADDED: dict[str, dict[str, tuple[str, ...]]] = {
    "0001": {
        "threads": ("seq", "tenant", "id", "created_at", "data"),
        "items": ("seq", "tenant", "thread_id", "id", "type", "created_at", "data"),
        "attachments": ("seq", "tenant", "id", "thread_id", "created_at", "data"),
    },
    "0002": {"threads": ("version",)},
    "0003": {},
}
"""The columns each shipped revision adds, per table (a new revision adds its entry here)."""

KEYS: dict[str, tuple[str, ...]] = {"0001": ("seq",), "0003": ("tenant", "seq")}
"""The primary key of every table from each shipped revision on (SQLite always keeps ``seq``)."""


def columns_at(revision: str) -> dict[str, set[str]]:
    """The columns of each table at a shipped ``revision``."""
    columns: dict[str, set[str]] = {table: set() for table in TABLES}
    for shipped, added in ADDED.items():
        for table, names in added.items():
            columns[table].update(names)
        if shipped == revision:
            return columns
    raise ValueError(f"{revision!r} is not a shipped revision")


def key_at(revision: str, dialect: str) -> tuple[str, ...]:
    """The primary key columns of each table at a shipped ``revision`` on ``dialect``."""
    key = KEYS["0001"]
    for shipped in ADDED:
        if dialect != "sqlite":
            key = KEYS.get(shipped, key)
        if shipped == revision:
            return key
    raise ValueError(f"{revision!r} is not a shipped revision")


def shipped_ancestor(scripts: ScriptDirectory, revision: str | None) -> str | None:
    """The newest shipped revision at or below ``revision`` (scripts of your own skipped)."""
    while revision is not None and revision not in ADDED:
        script = scripts.get_revision(revision)
        down = script.down_revision if script is not None else None
        revision = down if isinstance(down, str) or down is None else down[0]
    return revision


def problems(connection: sa.Connection, prefix: str, revision: str) -> list[str]:
    """What differs between the tables of ``prefix`` and a shipped ``revision``; [] if none."""
    expected = columns_at(revision)
    ours = columns_at(list(ADDED)[-1])
    key = key_at(revision, connection.dialect.name)
    inspector = sa.inspect(connection)
    existing = set(inspector.get_table_names())
    found = []
    for table in TABLES:
        name = f"{prefix}{table}"
        if name not in existing:
            found.append(f"{name} does not exist")
            continue
        columns = {column["name"] for column in inspector.get_columns(name)}
        missing = expected[table] - columns
        later = (ours[table] - expected[table]) & columns
        if missing:
            found.append(f"{name} has no {_names(missing)}")
        if later:
            found.append(f"{name} already has {_names(later)} (of a later revision)")
        if not missing and not later:
            primary = tuple(inspector.get_pk_constraint(name)["constrained_columns"])
            if primary != key:
                found.append(
                    f"{name} has the primary key ({', '.join(primary)}), not ({', '.join(key)})"
                )
    return found


def refusal(
    connection: sa.Connection, prefix: str, revision: str, scripts: ScriptDirectory
) -> str | None:
    """Why the tables of ``prefix`` are not ours at ``revision`` (one line), or None."""
    shipped = shipped_ancestor(scripts, revision)
    if shipped is None:
        return None
    found = problems(connection, prefix, shipped)
    if not found:
        return None
    if all(problem.endswith(" does not exist") for problem in found):
        return (
            f"There are no chatkit-stores tables with prefix {prefix!r} to record revision "
            f"{revision} for; nothing was changed (`chatkit-stores migrate URL` creates them)"
        )
    return (
        f"The tables with prefix {prefix!r} are not chatkit-stores tables at revision "
        f"{revision}: {'; '.join(found)}. Nothing was changed; {advice(connection, prefix)}"
    )


def matching_revision(connection: sa.Connection, prefix: str) -> str | None:
    """The newest shipped revision whose columns the tables of ``prefix`` have, if any."""
    for revision in reversed(ADDED):
        if not problems(connection, prefix, revision):
            return revision
    return None


def advice(connection: sa.Connection, prefix: str) -> str:
    """What to do about tables of ``prefix`` that no migration of ours recorded."""
    revision = matching_revision(connection, prefix)
    if revision is not None:
        return (
            f"they have the columns of revision {revision}: if chatkit-stores made them, "
            f"record that with `chatkit-stores stamp URL {revision}`"
        )
    return "use another table prefix (--table-prefix, table_prefix=...) or move those tables"


def _names(columns: Iterable[str]) -> str:
    return ", ".join(sorted(columns))
