"""SQL stores: SQLite, PostgreSQL and MySQL/MariaDB over one schema."""

from .schema import DEFAULT_TABLE_PREFIX, Tables, make_tables
from .store import MySQLStore, PostgresStore, SchemaMissingError, SQLiteStore, SQLStore

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "MySQLStore",
    "PostgresStore",
    "SQLStore",
    "SQLiteStore",
    "SchemaMissingError",
    "Tables",
    "make_tables",
]
