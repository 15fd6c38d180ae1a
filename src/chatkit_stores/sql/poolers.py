"""PostgreSQL behind a transaction-mode pooler (PgBouncer, managed poolers): unnamed statements.

A transaction-mode pooler hands each transaction, and each statement outside one, to whichever
server connection is free. asyncpg prepares every statement under a name on the server it
happens to reach and reuses the name later, so through a pooler a later call finds the name
missing ("prepared statement ... does not exist"), taken ("already exists"), or worse, bound
to another client's statement on that server, which then runs with our parameters. Unnamed
statements (prepared and executed in one exchange, before the pooler may switch servers) are
the only safe way, so a pooler must be known before the first statement is prepared.

- ``pooler="auto"`` (the default): every engine this library makes checks its first connection
  for a pooler. A pooler answers the start-up with its own cancellation key, so the server
  process id the client was told differs from ``pg_backend_pid()`` (asked once, with the simple
  query protocol, which prepares nothing). Behind a pooler, that connection is replaced and
  every connection after it uses unnamed statements (asyncpg's ``statement_cache_size=0``;
  SQLAlchemy's adapter, used by migrations, gets unique names and no statement cache).
- ``pooler=True``: unnamed statements from the start, no check; ``pooler=False``: named and
  cached statements, no check (a direct connection, one round trip saved per new connection).
- A pooler that forwards the server's own key is not detected. The safety net: a call that
  fails with "prepared statement does not exist / already exists" switches the engine to
  unnamed statements, retires its pooled connections and is retried once on a new connection,
  when nothing of it can have taken effect (an atomic call's transaction was aborted by the
  error; a call outside a transaction had not had an earlier statement answered).
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import event, exc
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.util import await_only

if TYPE_CHECKING:
    from .driver import Driver

T = TypeVar("T")
log = logging.getLogger(__name__)

POOLER_MODES = ("auto", True, False)
"""The values of the ``pooler`` engine option."""

# SQLSTATEs of a statement name that a pooler made point nowhere or elsewhere.
_LOST_STATEMENT = {"26000", "42P05"}  # invalid_sql_statement_name, duplicate_prepared_statement
_PROTOCOL_VIOLATION = "08P01"  # "bind message supplies 5 parameters, but prepared statement..."


def _unique_statement_name() -> str:
    return f"__chatkit_{uuid.uuid4().hex}__"


UNNAMED_STATEMENTS: dict[str, Any] = {
    "statement_cache_size": 0,  # asyncpg: unnamed statements
    "prepared_statement_cache_size": 0,  # SQLAlchemy's adapter: prepare again every time ...
    "prepared_statement_name_func": _unique_statement_name,  # ... under a name nobody else has
}
"""Connect arguments for a connection behind a transaction-mode pooler."""


class Pooler:
    """What one engine knows about a pooler between it and PostgreSQL (``None``: not yet)."""

    def __init__(self, behind: bool | None) -> None:
        self.behind = behind

    def connect(self, dialect: Dialect, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        """SQLAlchemy's ``do_connect`` hook: check for a pooler once, then connect accordingly."""
        if self.behind is None:
            connection = dialect.connect(*cargs, **cparams)
            try:
                behind = behind_pooler(connection.driver_connection)
            except Exception as error:  # a proxy without COPY, say: unnamed is always correct
                log.warning("could not check for a pooler (%s): using unnamed statements", error)
                behind = True
            if not behind:
                self.behind = False
                return connection
            log.info("PostgreSQL is reached through a pooler: using unnamed statements")
            self.behind = True
            connection.close()  # it has a statement cache; it has prepared nothing yet
        if self.behind:
            cparams.update(UNNAMED_STATEMENTS)
        return None  # SQLAlchemy connects with ``cparams``


_POOLERS: weakref.WeakKeyDictionary[Engine, Pooler] = weakref.WeakKeyDictionary()


def attach(engine: Engine, mode: bool | str = "auto") -> None:
    """Make ``engine``'s new connections check for a pooler (``"auto"``) or assume one."""
    if mode not in POOLER_MODES:
        raise ValueError(f"pooler must be 'auto', True or False, not {mode!r}")
    pooler = Pooler(None if mode == "auto" else bool(mode))
    _POOLERS[engine] = pooler
    event.listen(engine, "do_connect", pooler.connect)


def behind(engine: Engine) -> bool | None:
    """Whether ``engine`` uses unnamed statements (``None``: no connection checked yet)."""
    pooler = _POOLERS.get(engine)
    return None if pooler is None else pooler.behind


def behind_pooler(connection: Any) -> bool:
    """Whether an asyncpg connection reaches its server through a pooler (one round trip)."""
    told: int = connection.get_server_pid()
    answer: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        answer.append(chunk)

    # COPY without arguments runs as a simple query: nothing is prepared, named or cached.
    await_only(connection.copy_from_query("SELECT pg_backend_pid()", output=collect))
    return int(b"".join(answer)) != told


def lost_statement(error: BaseException | None) -> bool:
    """Whether ``error`` is the server not finding (or finding another) prepared statement."""
    state = getattr(error, "sqlstate", None)
    if state in _LOST_STATEMENT:
        return True
    return state == _PROTOCOL_VIOLATION and "prepared statement" in str(error)


def switch_to_unnamed(engine: Engine) -> None:
    """After a lost statement: unnamed statements from now on; pooled connections retired."""
    pooler = _POOLERS.get(engine)
    if pooler is None:  # an engine the application made
        attach(engine, True)
    elif not pooler.behind:
        log.warning(
            "a prepared statement was lost (a transaction-mode pooler?): "
            "switching to unnamed statements; pass pooler=True to start with them"
        )
        pooler.behind = True
    engine.pool._invalidate(None)  # type: ignore[arg-type]  # every connection made before now


class Attempt(Generic[T]):
    """A store call's first attempt: remembers its driver, to tell if a retry is safe."""

    def __init__(self, work: Callable[[Driver], Awaitable[T]]) -> None:
        self._work = work
        self._driver: Driver | None = None

    async def work(self, driver: Driver) -> T:
        """Run the call's work on ``driver``."""
        self._driver = driver
        return await self._work(driver)

    def may_retry(self, engine: Engine, error: exc.DBAPIError, atomic: bool) -> bool:
        """Whether ``error`` is a lost statement and nothing of the call took effect.

        If so, the engine switches to unnamed statements before the retry.
        """
        if not lost_statement(error.orig):
            return False
        if not atomic and (self._driver is None or self._driver.answers):
            return False  # an earlier statement of the call already ran
        switch_to_unnamed(engine)
        return True
