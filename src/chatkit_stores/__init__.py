"""Persistence for ChatKit servers: SQL and in-memory stores with tenant isolation.

Public names are imported on first use: the command line imports this package before it
answers a mistyped URL, which must not wait for SQLAlchemy and ChatKit to load. Optional
drivers (asyncpg, aiomysql, boto3) are imported by the store that uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audit import AuditError, AuditEvent, AuditHook
    from .concurrency import ThreadConflictError
    from .files import DiskAttachmentStore, S3AttachmentStore, UploadRejected
    from .memory import MemoryStore
    from .sql import MySQLStore, PostgresStore, SchemaMissingError, SQLiteStore, SQLStore
    from .telemetry import Telemetry
    from .tenancy import TenantError, TenantResolver, default_tenant, single_tenant

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "AuditEvent",
    "AuditHook",
    "DiskAttachmentStore",
    "MemoryStore",
    "MySQLStore",
    "PostgresStore",
    "S3AttachmentStore",
    "SQLStore",
    "SQLiteStore",
    "SchemaMissingError",
    "Telemetry",
    "TenantError",
    "TenantResolver",
    "ThreadConflictError",
    "UploadRejected",
    "default_tenant",
    "single_tenant",
]


_MODULES = (".tenancy", ".audit", ".concurrency", ".telemetry", ".memory", ".sql", ".files")
"""Where the names of ``__all__`` live, searched in this order."""


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(module, __name__), name, None)
            if value is not None:
                globals()[name] = value  # found directly from now on
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's attributes, public names included before their first use."""
    return sorted({*globals(), *__all__})
