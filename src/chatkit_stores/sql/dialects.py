"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

- URLs without a driver are mapped to the async driver (``postgresql://`` -> asyncpg, ...).
- Column types: ids compare byte-exact on every dialect (MySQL/MariaDB collations are
  case-insensitive and pad spaces, so keys are ``VARBINARY`` there); the JSON blob is plain text
  (``jsonb`` rejects ``\\u0000`` and reorders keys; a JSON column would double-encode the string);
  timestamps keep microseconds (MySQL ``DATETIME`` needs ``fsp=6``); SQLite only auto-numbers an
  ``INTEGER PRIMARY KEY``.
- The upsert statement and engine options (SQLite WAL and busy timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, Select, String, Table, Text, event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..tenancy import MAX_KEY_LENGTH
from . import poolers

_MYSQL = ("mysql", "mariadb")


class _Varbinary(mysql.VARBINARY):
    """``VARBINARY`` bound as text: the server stores the string's UTF-8 bytes.

    Binding ``bytes`` fails with aiomysql 0.3 on PyMySQL 1.2 (its bytes escaper was removed).
    """

    def bind_processor(self, dialect: Dialect) -> None:
        """Send the ``str`` unchanged."""
        return None


class Key(TypeDecorator[str]):
    """An id or tenant: up to 255 characters, compared byte-exact (``VARBINARY`` on MySQL)."""

    impl = String(MAX_KEY_LENGTH)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use ``VARBINARY`` on MySQL/MariaDB, whose text collations are not byte-exact."""
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(_Varbinary(MAX_KEY_LENGTH * 4))
        return dialect.type_descriptor(String(MAX_KEY_LENGTH))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        """Decode ``VARBINARY`` bytes back to text."""
        return None if value is None else key_text(value)


def key_text(value: str | bytes) -> str:
    """A key as read back: MySQL/MariaDB return ``VARBINARY`` columns as bytes."""
    return value.decode() if isinstance(value, bytes) else value


Blob = Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), *_MYSQL)
"""The pydantic JSON of a stored model, kept as text exactly as serialized."""

Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
"""A naive UTC timestamp with microseconds."""

Serial = BigInteger().with_variant(Integer(), "sqlite")
"""The auto-numbered insertion order, the tie-breaker for equal timestamps."""

TABLE_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
INSTALL_HINTS = {
    "asyncpg": "chatkit-stores[postgres]",
    "aiomysql": "chatkit-stores[mysql]",
    "aiosqlite": "chatkit-stores",
}

SQLITE_BUSY_TIMEOUT_S = 30.0

MYSQL_HANDSHAKE_TIMEOUT_S = 10.0
"""Longest wait for a MySQL/MariaDB server to complete a new connection's handshake, unless
``connect_args`` name a ``connect_timeout`` (aiomysql's own bounds only the TCP connect: a server
that accepts and never greets would hold the call, and its place in line, for ever)."""

TRANSACTION_ISOLATION = {
    "postgresql": "READ COMMITTED",
    "mysql": "READ COMMITTED",
    "sqlite": "SERIALIZABLE",
}
"""The isolation level of a call that needs several statements to be atomic."""


def async_url(url: str | URL) -> URL:
    """Return ``url`` with the async driver filled in when it names none."""
    parsed = make_url(url)
    if "+" not in parsed.drivername and parsed.drivername in ASYNC_DRIVERS:
        parsed = parsed.set(drivername=ASYNC_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() not in ("sqlite", "postgresql", *_MYSQL):
        raise ValueError(
            f"Unsupported database URL scheme {parsed.drivername!r}: "
            "use sqlite://, postgresql:// or mysql:// (mariadb://)"
        )
    return parsed


def backend_of(url: URL) -> str:
    """Return ``sqlite``, ``postgresql`` or ``mysql`` for a URL (MariaDB counts as mysql)."""
    name = url.get_backend_name()
    return "mysql" if name in _MYSQL else name


def engine_options(url: URL, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return this library's engine defaults for ``url``, overridden by ``given``.

    Connections run in autocommit, so a single-statement call is one round trip: no BEGIN, no
    COMMIT, and no ROLLBACK when the connection returns to the pool. Calls that need several
    statements to be atomic open a real transaction (``TRANSACTION_ISOLATION``). There is no
    pre-ping (it costs one to three round trips per call on asyncpg): a connection the server
    dropped fails the call that uses it, and SQLAlchemy then replaces the whole pool.
    """
    options: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "skip_autocommit_rollback": True,
        # Nothing to reset: every store call commits, or discards the connection on an error.
        "pool_reset_on_return": None,
        "pool_use_lifo": True,  # reuse the warmest connection; idle ones can time out
    }
    if backend_of(url) == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        if _in_memory(url):  # every connection to an in-memory database is a new database
            options["poolclass"] = StaticPool
            del options["pool_use_lifo"]
    else:
        options["pool_recycle"] = 3600
    given = dict(given or {})
    if "poolclass" in given:  # LIFO is an option of the default queue pool only
        options.pop("pool_use_lifo", None)
    return options | given


def create_engine(url: URL, options: Mapping[str, Any]) -> AsyncEngine:
    """Create an async engine; a missing driver names the extra to install.

    ``options["pooler"]`` (PostgreSQL: ``"auto"``, ``True``, ``False``) is ours, see ``poolers``.
    """
    options = dict(options)
    pooler = options.pop("pooler", "auto")
    if pooler != "auto" and backend_of(url) != "postgresql":
        raise ValueError("the pooler option applies to PostgreSQL only")
    try:
        engine = create_async_engine(url, **options)
    except ModuleNotFoundError as exc:
        driver = url.get_driver_name()
        raise ImportError(
            f"The {driver} driver for {backend_of(url)} is not installed: "
            f"pip install '{INSTALL_HINTS.get(driver, driver)}'"
        ) from exc
    if backend_of(url) == "sqlite" and not _in_memory(url):
        event.listen(engine.sync_engine, "connect", _sqlite_wal)
    if backend_of(url) == "postgresql":
        poolers.attach(engine.sync_engine, pooler)
    if backend_of(url) == "mysql":
        event.listen(engine.sync_engine, "do_connect", _bounded_mysql_handshake)
    return engine


def upsert(
    backend: str,
    table: Table,
    values: Mapping[str, Any],
    key: Iterable[str],
    update: Iterable[str],
    bump: str | None = None,
) -> Insert:
    """INSERT ``values``, or on a duplicate ``key`` overwrite only the ``update`` columns.

    ``bump`` names a counter column the update adds one to (a thread's version).
    """
    counter = {} if bump is None else {bump: table.c[bump] + 1}
    if backend == "mysql":
        mysql_stmt = mysql.insert(table).values(values)
        return mysql_stmt.on_duplicate_key_update(
            {c: mysql_stmt.inserted[c] for c in update} | counter
        )
    dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
    stmt = dialect_insert(table).values(values)
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={c: stmt.excluded[c] for c in update} | counter
    )


def insert_missing(
    backend: str, table: Table, values: Mapping[str, Any], key: Iterable[str]
) -> Insert:
    """INSERT ``values`` unless a row with the same ``key`` exists (then change nothing)."""
    if backend == "mysql":  # not INSERT IGNORE, which would also hide data errors
        first = next(iter(key))
        return mysql.insert(table).values(values).on_duplicate_key_update({first: table.c[first]})
    dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
    return dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=list(key))


def use_index(stmt: Select[Any], table: Table, index: str) -> Select[Any]:
    """Make MySQL/MariaDB walk ``index`` for ``table`` (other dialects choose it themselves).

    With a cursor deep in a long list, MariaDB 10.11 prefers ``ref`` on the equality columns
    and reads every row from the list's end to the cursor; forced, it takes the range on
    created_at, about one page of rows (``tests/test_query_plans.py`` checks it).
    """
    hint = f"FORCE INDEX ({index})"
    return stmt.with_hint(table, hint, "mysql").with_hint(table, hint, "mariadb")


def _bounded_mysql_handshake(
    dialect: Dialect, _record: Any, _args: Any, params: dict[str, Any]
) -> None:
    """Make a new aiomysql connection fail (error 2013, a lost connection) when the server has
    not completed the handshake in time."""
    seconds = float(params.get("connect_timeout") or MYSQL_HANDSHAKE_TIMEOUT_S)
    connect = dialect.loaded_dbapi.aiomysql.connect
    lost = dialect.loaded_dbapi.OperationalError

    async def handshake(*args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(connect(*args, **kwargs), seconds)
        except asyncio.TimeoutError:
            raise lost(2013, f"no handshake from the server within {seconds:g} s") from None

    params.setdefault("async_creator_fn", handshake)


def _in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
