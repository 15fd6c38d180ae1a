"""The SQL the raw baselines run: the statements our stores issue, written out by hand.

Statements are written with ``:name`` parameters and translated once to the driver's style:
``$1`` (asyncpg), ``%(name)s`` (aiomysql) or ``:name`` (sqlite3, aiosqlite).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Style = Literal["numeric", "pyformat", "named"]
_PARAM = re.compile(r":(\w+)")


@dataclass(frozen=True)
class Statement:
    """One SQL statement in a driver's parameter style."""

    sql: str
    names: tuple[str, ...]
    """Parameter names in ``$n`` order (numeric style only)."""

    def positional(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The arguments for a ``$1, $2, ...`` statement."""
        return tuple(values[name] for name in self.names)


def translate(sql: str, style: Style) -> Statement:
    """Rewrite ``:name`` parameters into ``style``."""
    if style == "named":
        return Statement(sql, ())
    if style == "pyformat":
        return Statement(_PARAM.sub(r"%(\1)s", sql), ())
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return Statement(_PARAM.sub(number, sql), tuple(names))


class Queries:
    """Every statement of the benchmark's store calls for one dialect and table prefix."""

    def __init__(self, dialect: str, prefix: str, style: Style) -> None:
        self.dialect = dialect
        self.style = style
        threads, items, attachments = (f"{prefix}{t}" for t in ("threads", "items", "attachments"))
        thread_key = "tenant = :tenant AND id = :id"
        item_scope = "tenant = :tenant AND thread_id = :thread_id"
        of_thread = "tenant = :tenant AND thread_id = :id"
        self.load_thread = self._sql(f"SELECT data FROM {threads} WHERE {thread_key}")
        self.save_thread = self._sql(
            f"INSERT INTO {threads} (tenant, id, created_at, data) "
            "VALUES (:tenant, :id, :created_at, :data)" + self._upsert(["tenant", "id"], ["data"])
        )
        self.save_item = self._sql(
            f"INSERT INTO {items} (tenant, thread_id, id, type, created_at, data) "
            "VALUES (:tenant, :thread_id, :id, :type, :created_at, :data)"
            + self._upsert(["tenant", "thread_id", "id"], ["type", "data"])
        )
        self.load_attachment = self._sql(f"SELECT data FROM {attachments} WHERE {thread_key}")
        self.save_attachment = self._sql(
            f"INSERT INTO {attachments} (tenant, id, thread_id, created_at, data) "
            "VALUES (:tenant, :id, :thread_id, :created_at, :data)"
            + self._upsert(["tenant", "id"], ["thread_id", "data"])
        )
        self.delete_thread = [
            self._sql(f"DELETE FROM {items} WHERE {of_thread}"),
            self._sql(f"DELETE FROM {attachments} WHERE {of_thread}"),
            self._sql(f"DELETE FROM {threads} WHERE {thread_key}"),
        ]
        self.thread_pages = self._pages(threads, "tenant = :tenant")
        self.item_pages = self._pages(items, item_scope)
        self.thread_cursor = self._sql(
            f"SELECT seq FROM {threads} WHERE tenant = :tenant AND id = :after"
        )
        self.item_cursor = self._sql(f"SELECT seq FROM {items} WHERE {item_scope} AND id = :after")

    def _sql(self, sql: str) -> Statement:
        return translate(sql, self.style)

    def _upsert(self, key: list[str], update: list[str]) -> str:
        if self.dialect == "mysql":
            return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in update)
        assignments = ", ".join(f"{c} = excluded.{c}" for c in update)
        return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"

    def _pages(self, table: str, scope: str) -> dict[tuple[str, bool], Statement]:
        """Keyset page queries by ``(order, has a cursor)``; the cursor row is a subquery."""
        hint = f" FORCE INDEX ({table}_order)" if self.dialect == "mysql" else ""
        pages = {}
        for order, op in (("asc", ">"), ("desc", "<")):
            ordering = f" ORDER BY created_at {order.upper()}, seq {order.upper()} LIMIT :limit"
            first = f"SELECT data FROM {table}{hint} WHERE {scope}"
            cursor = f"FROM {table} WHERE {scope} AND id = :after"
            if self.dialect == "mysql":  # MariaDB range-scans this form, not a row value
                at, seq = f"(SELECT created_at {cursor})", f"(SELECT seq {cursor})"
                after = f" AND created_at {op}= {at} AND (created_at {op} {at} OR seq {op} {seq})"
            else:
                after = f" AND (created_at, seq) {op} (SELECT created_at, seq {cursor})"
            pages[order, False] = self._sql(first + ordering)
            pages[order, True] = self._sql(first + after + ordering)
        return pages
