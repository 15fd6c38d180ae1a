"""``chatkit-stores rekey``: seal every stored blob under the current key of the key ring.

After a new key is made current, rows sealed with older keys stay readable (the ring holds those
keys) until they are rewritten. ``rekey`` rewrites them: each row whose ``data`` is not already
sealed with the current key (an older key's envelope, or plaintext JSON written before
encryption was turned on) is opened and sealed again, a batch at a time in ``seq`` order, one
transaction per batch. Once it has run, the old keys can leave the ring.

- Idempotent and resumable: the query only finds rows not yet under the current key, so a run
  that was interrupted, or run twice, starts again where the work is left.
- Safe beside a running app: each row is written only if its ``data`` is still exactly the blob
  that was read (compared byte for byte). A row a request saved meanwhile is read again and
  sealed afresh if it still needs it, never overwritten with the older content; a row deleted
  meanwhile stays deleted. A thread's version is not bumped (its content is unchanged).
- A row that cannot be opened (sealed with a key the ring lacks, or altered) is reported and
  left as it is; the command then exits with status 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import LargeBinary, Table, Text, bindparam, cast, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ..encryption import EncryptionError, KeyRing, key_id_of
from ..sql import dialects
from .database import KEYS, TABLES, Database, blame
from .wording import NOUNS, plural

MAX_ATTEMPTS = 5
"""How often one row is read again when requests keep saving it while it is being re-sealed."""

PLAINTEXT = "plaintext"
"""What :class:`RekeyReport` calls rows that were not encrypted."""


@dataclass(frozen=True)
class Unreadable:
    """A row ``rekey`` could not open (and left as it is)."""

    table: str
    key: tuple[str, ...]
    error: str

    def __str__(self) -> str:
        return self.error


@dataclass
class RekeyReport:
    """What one run re-sealed, per table and per former key, and what it had to leave."""

    current: str
    resealed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    former: Counter[str] = field(default_factory=Counter)
    """Rows re-sealed, by the key they were sealed with before (or ``plaintext``)."""
    unreadable: int = 0
    busy: int = 0
    """Rows saved by requests on every one of ``MAX_ATTEMPTS`` tries: run rekey again."""

    @property
    def ok(self) -> bool:
        """Whether every row is now sealed with the current key."""
        return not self.unreadable and not self.busy

    def summary(self) -> str:
        """``sealed 2 threads, 9 items, 1 attachment with key 'k2' (was: 8 plaintext, 4 k1)``."""
        counts = ", ".join(plural(self.resealed[name], NOUNS[name]) for name in TABLES)
        line = f"sealed {counts} with key {self.current!r}"
        if self.former:
            was = ", ".join(f"{count} {key}" for key, count in sorted(self.former.items()))
            line += f" (was: {was})"
        if self.unreadable:
            line += f"; {plural(self.unreadable, 'row')} could not be opened and were left as is"
        if self.busy:
            line += f"; {plural(self.busy, 'row')} kept changing: run rekey again"
        return line


def exact(expression: ColumnElement[Any], value: ColumnElement[Any], backend: str) -> Any:
    """``expression = value`` compared byte for byte (MySQL's text collations ignore case)."""
    if backend == "mysql":
        return cast(expression, LargeBinary) == cast(value, LargeBinary)
    return expression == value


class Rekeyer:
    """Re-seals the rows of one database with the current key of ``keys``."""

    def __init__(
        self,
        db: Database,
        keys: KeyRing,
        batch_size: int,
        on_unreadable: Callable[[Unreadable], None],
    ) -> None:
        self.db, self.keys, self.batch_size = db, keys, batch_size
        self.on_unreadable = on_unreadable
        self.report = RekeyReport(keys.current)

    def stale(self, table: Table) -> Any:
        """Rows whose ``data`` does not start with a header of the ring's current key (with
        ``compress``, of its deflated envelopes only)."""
        headers = self.keys.current_headers  # all of one length: "ckenc:N:<current>:"
        start = func.substr(table.c.data, 1, len(headers[0]))
        return not_(
            or_(
                *(
                    exact(start, bindparam(f"header{n}", header, Text()), self.db.backend)
                    for n, header in enumerate(headers)
                )
            )
        )

    async def count(self, name: str) -> int:
        """How many rows of ``name`` are not sealed with the current key."""
        table = self.db.table(name)
        async with self.db.engine.connect() as conn:
            stmt = select(func.count()).select_from(table).where(self.stale(table))
            return int((await conn.execute(stmt)).scalar_one())

    async def table(self, name: str, advance: Callable[[int], None]) -> None:
        """Re-seal the stale rows of ``name``, a batch (one transaction) at a time."""
        table = self.db.table(name)
        key = [table.c[column] for column in KEYS[name]]
        last = 0
        while True:
            stmt = (
                select(table.c.seq, *key, table.c.data)
                .where(table.c.seq > last, self.stale(table))
                .order_by(table.c.seq)
                .limit(self.batch_size)
            )
            async with self.db.engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
            if not rows:
                return
            last = rows[-1][0]
            async with self.db.engine.connect() as conn:
                level = dialects.TRANSACTION_ISOLATION[self.db.backend]
                conn = await conn.execution_options(isolation_level=level)
                async with conn.begin():
                    for row in rows:
                        await self.reseal(conn, name, tuple(row[1:-1]), row[-1])
            advance(len(rows))
            if len(rows) < self.batch_size:
                return

    async def reseal(
        self, conn: AsyncConnection, name: str, key: tuple[str, ...], blob: str
    ) -> None:
        """Seal one row's content with the current key if its ``data`` is still ``blob``."""
        table = self.db.table(name)
        where = [table.c[c] == value for c, value in zip(KEYS[name], key, strict=True)]
        for _ in range(MAX_ATTEMPTS):
            if self.keys.is_current(blob):
                return  # sealed by a request meanwhile
            try:
                sealed = self.keys.seal(self.keys.open(blob, name, *key), name, *key)
            except EncryptionError as error:
                self.report.unreadable += 1
                self.on_unreadable(Unreadable(name, key, str(error)))
                return
            read = bindparam("read", blob, Text())
            swap = update(table).where(*where, exact(table.c.data, read, self.db.backend))
            if (await conn.execute(swap.values(data=sealed))).rowcount == 1:
                self.report.resealed[name] += 1
                self.report.former[key_id_of(blob) or PLAINTEXT] += 1
                return
            now = (await conn.execute(select(table.c.data).where(*where))).first()
            if now is None:
                return  # deleted meanwhile: stays deleted
            blob = now[0]
        self.report.busy += 1


async def rekey(
    url: str,
    keys: KeyRing,
    *,
    prefix: str,
    batch_size: int = 500,
    progress: Callable[[str, int | None], Any] | None = None,
    on_unreadable: Callable[[Unreadable], None] = lambda row: None,
) -> RekeyReport:
    """Seal every row of the database at ``url`` with ``keys.current``; see the module."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    db = Database.open(url, prefix, must_exist=True)
    rekeyer = Rekeyer(db, keys, batch_size, on_unreadable)
    try:
        await db.require_schema()
        with blame(url):
            for name in TABLES:
                shown = None if progress is None else progress(name, await rekeyer.count(name))
                await rekeyer.table(name, (lambda n: None) if shown is None else shown.advance)
                if shown is not None:
                    shown.close()
    finally:
        await db.close()
    return rekeyer.report
