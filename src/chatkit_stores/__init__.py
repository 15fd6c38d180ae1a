"""Persistence for ChatKit servers: SQL and in-memory stores with tenant isolation.

Names are imported on first use, so ``import chatkit_stores`` stays cheap (the pytest plugin
loads it in every test run) and optional drivers are only needed by the store that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .audit import AuditError, AuditEvent, AuditHook
    from .concurrency import ThreadConflictError
    from .files import DiskAttachmentStore, S3AttachmentStore, UploadRejected
    from .memory import MemoryStore
    from .sql import MySQLStore, PostgresStore, SchemaMissingError, SQLiteStore, SQLStore
    from .telemetry import Telemetry
    from .tenancy import TenantError, TenantResolver, default_tenant, single_tenant

__version__ = "0.1.0"

_EXPORTS = {
    "AuditError": ".audit",
    "AuditEvent": ".audit",
    "AuditHook": ".audit",
    "DiskAttachmentStore": ".files",
    "S3AttachmentStore": ".files",
    "UploadRejected": ".files",
    "MemoryStore": ".memory",
    "MySQLStore": ".sql",
    "PostgresStore": ".sql",
    "SQLStore": ".sql",
    "SQLiteStore": ".sql",
    "SchemaMissingError": ".sql",
    "Telemetry": ".telemetry",
    "TenantError": ".tenancy",
    "ThreadConflictError": ".concurrency",
    "TenantResolver": ".tenancy",
    "default_tenant": ".tenancy",
    "single_tenant": ".tenancy",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
