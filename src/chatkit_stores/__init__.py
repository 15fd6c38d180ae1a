"""Persistence for ChatKit servers: SQL and in-memory stores with tenant isolation.

Optional drivers (asyncpg, aiomysql, boto3) are imported by the store that uses them, so every
name here imports without them.
"""

from __future__ import annotations

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
