"""Persistence for ChatKit servers: SQL and in-memory stores with tenant isolation."""

from .memory import MemoryStore
from .sql import MySQLStore, PostgresStore, SchemaMissingError, SQLiteStore, SQLStore
from .tenancy import TenantError, TenantResolver, default_tenant, single_tenant

__version__ = "0.1.0"

__all__ = [
    "MemoryStore",
    "MySQLStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "SchemaMissingError",
    "TenantError",
    "TenantResolver",
    "default_tenant",
    "single_tenant",
]
