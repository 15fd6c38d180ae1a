"""The store variants the benchmark compares, opened by name for a backend.

- ``ours``: chatkit-stores ``SQLiteStore`` / ``PostgresStore`` / ``MySQLStore``.
- ``encrypted``: ours with ``encryption=`` (every blob sealed with AES-256-GCM, issue 19).
- ``raw``: (a) the same SQL on the bare driver, the physical limit.
- ``orm``: (b) a typical hand-written SQLAlchemy ORM store.
- ``naive``: (c) SQLite only, a blocking ``sqlite3.connect()`` per call.

Every variant reads and writes the same tables (created by our migrations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata

from .common import Context

VARIANTS = {
    "sqlite": ("ours", "encrypted", "raw", "orm", "naive"),
    "postgresql": ("ours", "encrypted", "raw", "orm"),
    "mysql": ("ours", "encrypted", "raw", "orm"),
}
"""The variants run on each backend; ``raw`` is the baseline every ratio divides by."""

LABELS = {
    "ours": "chatkit-stores",
    "encrypted": "chatkit-stores, encrypted",
    "raw": "(a) raw driver",
    "orm": "(b) SQLAlchemy ORM",
    "naive": "(c) naive sqlite3",
}


class BenchStore(Protocol):
    """The store calls the workload makes (a subset of ``chatkit.store.Store``)."""

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        """Return a thread or raise NotFoundError."""

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        """Insert or update a thread."""

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        """A page of the tenant's threads."""

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        """Delete a thread with its items and attachments."""

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        """Add an item to a thread."""

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        """A page of a thread's items."""

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        """Insert or update attachment metadata."""

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        """Return attachment metadata or raise NotFoundError."""

    async def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class Target:
    """A database to benchmark: ``sqlite``, ``postgresql`` or ``mysql`` and a plain URL."""

    backend: str
    url: str

    @property
    def sqlite_path(self) -> str:
        """The database file of a ``sqlite:///path`` URL."""
        return self.url.removeprefix("sqlite:///")


def ours(target: Target, prefix: str, pool_size: int, encryption: Any = None) -> Any:
    """Our store for the target (an ``SQLStore``, which also satisfies ``BenchStore``)."""
    from chatkit_stores import SQLStore

    options = {"pool_size": pool_size, "max_overflow": 0}
    return SQLStore.from_url(
        target.url, table_prefix=prefix, engine_options=options, encryption=encryption
    )


ENCRYPTION_CACHE_BYTES: int | None = None
"""The ``encrypted`` variant's key ring cache: None for the library's default, 0 to decrypt
every row read (``python -m benchmarks.encryption --cold``)."""
ENCRYPTION_COMPRESS = False
"""Whether the ``encrypted`` variant deflates rows before sealing them (``--compress``)."""


def bench_keys(cache_bytes: int | None = None) -> Any:
    """The key ring of the ``encrypted`` variant: a fixed key (the figures need no secret)."""
    from chatkit_stores.encryption import CACHE_BYTES, KeyRing

    if cache_bytes is None:
        cache_bytes = CACHE_BYTES if ENCRYPTION_CACHE_BYTES is None else ENCRYPTION_CACHE_BYTES
    key = {"bench": bytes(range(32))}
    return KeyRing(key, cache_bytes=cache_bytes, compress=ENCRYPTION_COMPRESS)


async def open_variant(name: str, target: Target, prefix: str, pool_size: int) -> BenchStore:
    """Open the variant ``name`` on ``target``'s tables with ``prefix``."""
    if name in ("ours", "encrypted"):
        keys = bench_keys() if name == "encrypted" else None
        store: BenchStore = ours(target, prefix, pool_size, keys)
        return store
    if name == "orm":
        from .orm import OrmStore

        return OrmStore(target.url, prefix, pool_size)
    if name == "naive":
        from .naive_sqlite import NaiveSQLiteStore

        return NaiveSQLiteStore(target.sqlite_path, prefix)
    if target.backend == "postgresql":
        from .raw_pg import RawPostgresStore

        return await RawPostgresStore.open(target.url, prefix, pool_size)
    if target.backend == "mysql":
        from .raw_mysql import RawMySQLStore

        return await RawMySQLStore.open(target.url, prefix, pool_size)
    from .raw_sqlite import RawSQLiteStore

    return await RawSQLiteStore.open(target.sqlite_path, prefix, pool_size)
