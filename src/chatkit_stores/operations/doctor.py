"""``chatkit-stores doctor``: check that every stored blob still parses with the installed ChatKit.

A store keeps each model as its pydantic JSON. After an ``openai-chatkit`` upgrade (or a hand
edit) a blob may no longer validate, and ChatKit then fails when it loads that thread. The
doctor reads every row of every tenant in ``seq`` order, a batch at a time, validates ``data``
against ``ThreadMetadata``, the ``ThreadItem`` union or the ``Attachment`` union, and reports
each row that fails: table, tenant, id and the first validation error. A blob that parses but
names another id than its row is reported too (loading it would return the wrong object).

Encrypted rows (``chatkit_stores.encryption``) are opened with the key ring given (the command
reads ``CHATKIT_STORES_ENCRYPTION_KEYS``); one that does not open is a problem too. Without keys,
encrypted rows are counted but not checked. The report counts rows per key id.

It only runs ``SELECT``: in a read-only transaction on PostgreSQL and MySQL/MariaDB, with
``PRAGMA query_only`` on SQLite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ..encryption import EncryptionError, KeyRing, is_encrypted, key_id_of
from ..sql import dialects
from .database import TABLES, Database, Row, blame
from .wording import NOUNS, plural

ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "threads": TypeAdapter(ThreadMetadata),
    "items": TypeAdapter(ThreadItem),
    "attachments": TypeAdapter(Attachment),
}
"""The model each table's ``data`` must validate as."""


@dataclass(frozen=True)
class Problem:
    """A row whose ``data`` does not parse (or names another id)."""

    table: str
    tenant: str
    id: str
    thread_id: str | None
    error: str

    def __str__(self) -> str:
        thread = f" thread_id={self.thread_id!r}" if self.thread_id is not None else ""
        return f"{self.table} tenant={self.tenant!r}{thread} id={self.id!r}: {self.error}"


@dataclass
class DoctorReport:
    """How many rows of each table were checked, and how many failed."""

    checked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    keys: Counter[str] = field(default_factory=Counter)
    """Rows per key id they are sealed with (``plaintext``: not encrypted)."""
    unchecked: int = 0
    """Encrypted rows not checked, for want of keys."""

    @property
    def ok(self) -> bool:
        """Whether every row parsed."""
        return not any(self.failed.values())

    def summary(self) -> str:
        """``checked 3 threads, 10 items, 1 attachment: all parse`` (or how many do not)."""
        counts = ", ".join(plural(self.checked[name], NOUNS[name]) for name in TABLES)
        bad = sum(self.failed.values())
        if not bad:
            return f"checked {counts}: all parse"
        detail = ", ".join(
            plural(self.failed[name], NOUNS[name]) for name in TABLES if self.failed[name]
        )
        does = "does" if bad == 1 else "do"
        return f"checked {counts}: {plural(bad, 'row')} {does} not parse ({detail})"

    def check(
        self,
        name: str,
        row: Row,
        keys: KeyRing | None,
        on_problem: Callable[[Problem], None],
    ) -> None:
        """Count and check one row of table ``name`` (an encrypted row needs ``keys``)."""
        self.keys[key_label(row["data"])] += 1
        if keys is None and is_encrypted(row["data"]):
            self.unchecked += 1
            return
        self.checked[name] += 1
        problem = check_row(name, row, keys)
        if problem is not None:
            self.failed[name] += 1
            on_problem(problem)

    def key_summary(self) -> str | None:
        """``rows by key: 3 plaintext, 10 k1, 2 k2`` when any row is encrypted, else None."""
        if set(self.keys) <= {"plaintext"}:
            return None
        counts = ", ".join(f"{count} {key}" for key, count in sorted(self.keys.items()))
        line = f"rows by key: {counts}"
        if self.unchecked:
            line += (
                f"; {plural(self.unchecked, 'encrypted row')} not checked "
                "(no keys: set CHATKIT_STORES_ENCRYPTION_KEYS)"
            )
        return line


def check_row(name: str, row: Row, keys: KeyRing | None = None) -> Problem | None:
    """Validate one row's ``data`` (opened with ``keys``); return what is wrong, or None."""
    thread_id = row.get("thread_id") if name == "items" else None
    ids = (row["thread_id"], row["id"]) if name == "items" else (row["id"],)
    try:
        data = row["data"] if keys is None else keys.open(row["data"], name, row["tenant"], *ids)
        model = ADAPTERS[name].validate_json(data)
    except EncryptionError as error:
        return Problem(name, row["tenant"], row["id"], thread_id, str(error))
    except ValidationError as error:
        return Problem(name, row["tenant"], row["id"], thread_id, first_error(error))
    if getattr(model, "id", row["id"]) != row["id"]:
        message = f"data names id {model.id!r}, not the row's id"
        return Problem(name, row["tenant"], row["id"], thread_id, message)
    return None


def key_label(data: str) -> str:
    """The key id a blob is sealed with, ``plaintext``, or ``malformed`` (a broken envelope)."""
    if not is_encrypted(data):
        return "plaintext"
    return key_id_of(data) or "malformed"


def first_error(error: ValidationError) -> str:
    """``location: message`` of the first error, and how many more there are, on one line."""
    errors = error.errors(include_url=False)
    if not errors:
        return str(error).splitlines()[0]
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    if len(errors) > 1:
        message += f" (and {plural(len(errors) - 1, 'more error')})"
    return " ".join(message.split())[:500]


async def doctor(
    url: str,
    *,
    prefix: str,
    batch_size: int = 500,
    on_problem: Callable[[Problem], None] = lambda problem: None,
    keys: KeyRing | None = None,
) -> DoctorReport:
    """Validate every row of the database; call ``on_problem`` for each that fails.

    Encrypted rows are opened with ``keys``; without keys they are counted, not checked.
    """
    db = Database.open(url, prefix, must_exist=True)
    report = DoctorReport()
    try:
        await db.require_schema()
        with blame(url):
            async with db.engine.connect() as conn, read_only(conn, db.backend) as reading:
                for name in TABLES:
                    batches = db.batches(name, batch_size, reading)
                    async with aclosing(batches):
                        async for batch in batches:
                            for row in batch:
                                report.check(name, row, keys, on_problem)
    finally:
        await db.close()
    return report


@asynccontextmanager
async def read_only(conn: AsyncConnection, backend: str) -> AsyncIterator[AsyncConnection]:
    """``conn`` in one read-only transaction (SQLite: ``PRAGMA query_only``), undone after:
    the transaction wrote nothing, so it is rolled back."""
    level = dialects.TRANSACTION_ISOLATION[backend]
    if backend == "sqlite":
        await conn.execute(text("PRAGMA query_only = 1"))
    elif backend == "postgresql":
        conn = await conn.execution_options(isolation_level=level, postgresql_readonly=True)
    else:
        conn = await conn.execution_options(isolation_level=level)
        # Applies to the next transaction, which the first SELECT starts.
        await conn.execute(text("SET TRANSACTION READ ONLY"))
    try:
        yield conn
    finally:
        if backend == "sqlite":
            await conn.execute(text("PRAGMA query_only = 0"))
        elif conn.in_transaction():
            await conn.rollback()
