"""Which errors the command reports as one line, with which exit status.

A database that cannot be reached or refuses us, tables that are not ours, a conflict: the
command could not do its work (status 1). A bad URL, option, prefix or setting, a driver that
is not installed: the command line or configuration is wrong (status 2). Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys

FAILED = 1
"""The command could not do its work: the database is unreachable or refuses the login, the
tables are not ours or at another revision, a SQLite file is missing, a copy met different data
(``doctor``: rows that do not parse)."""
USAGE = 2
"""The command line or the configuration is wrong: an unknown option, a value that is not a
database URL, an unsupported scheme, a driver that is not installed, a bad table prefix."""


def explain(error: BaseException) -> tuple[int, str] | None:
    """``(exit status, message)`` for an error an operator can act on, else None."""
    from . import OperationError, UsageError

    usage = (
        UsageError,
        ImportError,  # an optional dependency that is not installed
        *_loaded("chatkit_stores.tenancy", "TenantError"),
        *_loaded("sqlalchemy.exc", "ArgumentError", "NoSuchModuleError"),
    )
    if isinstance(error, usage):
        return USAGE, str(error)
    if isinstance(error, (OperationError, *_loaded("chatkit_stores.migrations", "MigrationError"))):
        return FAILED, str(error)
    if isinstance(error, (OSError, *_loaded("sqlalchemy.exc", "SQLAlchemyError"))):
        return FAILED, _cannot_use(error)
    if isinstance(error, ValueError):  # e.g. a table prefix a store refuses
        return USAGE, str(error)
    return None


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The exception classes ``names`` of ``module`` if it is imported (if not, none was raised:
    the command answers a bad URL without importing SQLAlchemy, Alembic or ChatKit)."""
    found = sys.modules.get(module)
    return () if found is None else tuple(getattr(found, name) for name in names)


def _cannot_use(error: BaseException) -> str:
    """``cannot use URL: reason``, naming the file or database that failed."""
    from .database import URL_ATTRIBUTE, safe_url

    reason = getattr(error, "orig", None) or error
    text = str(reason).strip() or type(reason).__name__
    filename = getattr(error, "filename", None)
    if filename is not None:
        return f"cannot use {filename}: {getattr(error, 'strerror', None) or text}"
    url = getattr(error, URL_ATTRIBUTE, None)
    return f"cannot use {safe_url(url) if url else 'the database'}: {text}"
