"""(c) The naive pattern many ChatKit apps use: ``sqlite3.connect()`` per call in ``async def``.

Every call opens the file, runs its SQL and commits synchronously, on the event loop thread:
while it runs, no other coroutine of the server makes progress.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import datetime
from typing import Any

from .raw import RawStore, Values
from .raw_sqlite import sqlite_timestamp
from .sql_text import Statement


class NaiveSQLiteStore(RawStore):
    """The store calls with a blocking ``sqlite3`` connection opened per call."""

    style = "named"

    def __init__(self, path: str, prefix: str) -> None:
        super().__init__("sqlite", prefix)
        self.path = path

    def timestamp(self, moment: datetime) -> Any:
        """Timestamps as text, in the format the other variants write."""
        return sqlite_timestamp(super().timestamp(moment))

    async def _column(self, stmt: Statement, values: Values) -> list[Any]:
        with closing(sqlite3.connect(self.path)) as conn:
            return [row[0] for row in conn.execute(stmt.sql, values)]

    async def _execute(self, stmt: Statement, values: Values) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(stmt.sql, values)

    async def _atomic(self, steps: Sequence[tuple[Statement, Values]]) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            for stmt, values in steps:
                conn.execute(stmt.sql, values)

    async def close(self) -> None:
        """Nothing stays open."""
