"""``helpers.mock_store`` for openai-chatkit's own server tests, backed by one of our stores.

openai-chatkit's ``tests/test_chatkit_server.py`` builds its store as ``SQLiteStore(db_path)``
with ``db_path`` a shared in-memory SQLite URI (``file:N?mode=memory&cache=shared``), reads
``store.db_path`` back and subclasses the class to override ``generate_thread_id`` /
``generate_item_id``. Here ``SQLiteStore`` is a subclass of the store chosen by
``CHATKIT_STORES_UPSTREAM_BACKEND``, so the server under test talks to our store directly:

- ``memory``: ``MemoryStore`` (each instance has its own data);
- ``sqlite-file``: our ``SQLiteStore`` on a file of a temporary directory, one per ``db_path``;
- ``sqlite-memory``: our ``SQLiteStore`` on the test's own shared in-memory URI;
- ``postgres`` / ``mysql``: ``PostgresStore`` / ``MySQLStore`` on
  ``CHATKIT_STORES_POSTGRES_URL`` / ``CHATKIT_STORES_MYSQL_URL``, with fresh tables per
  ``db_path`` (a table prefix unique to this run and path, made with ``create_schema()``).

Instances built with the same ``db_path`` share their data, as they do upstream (except in
``memory``). ``upstream_plugin`` closes the stores after each test and drops this run's tables.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chatkit.store import Store

from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLStore
from chatkit_stores import SQLiteStore as OurSQLiteStore

BACKEND_ENV = "CHATKIT_STORES_UPSTREAM_BACKEND"
URL_ENVS = {"postgres": "CHATKIT_STORES_POSTGRES_URL", "mysql": "CHATKIT_STORES_MYSQL_URL"}
BASES: dict[str, type[Store[Any]]] = {
    "memory": MemoryStore,
    "sqlite-file": OurSQLiteStore,
    "sqlite-memory": OurSQLiteStore,
    "postgres": PostgresStore,
    "mysql": MySQLStore,
}

RUN_PREFIX = f"up{uuid.uuid4().hex[:8]}_"
"""Every table of this run starts with it: runs sharing a database never meet."""

OPEN_STORES: list[Store[Any]] = []
"""Stores built since the plugin last closed them (after each test)."""

_prefixes: dict[str, str] = {}
_files: Path | None = None


def backend() -> str:
    """The backend named by ``CHATKIT_STORES_UPSTREAM_BACKEND`` (default ``memory``)."""
    name = os.environ.get(BACKEND_ENV, "memory")
    if name not in BASES:
        raise RuntimeError(f"{BACKEND_ENV}={name!r}: expected one of {', '.join(BASES)}")
    return name


def server_url(name: str) -> str:
    """The database URL of ``postgres`` or ``mysql``; an unset variable is an error."""
    url = os.environ.get(URL_ENVS[name])
    if not url:
        raise RuntimeError(f"{BACKEND_ENV}={name} needs {URL_ENVS[name]} (a database URL)")
    return url


def table_prefix(db_path: str) -> str:
    """The table prefix of ``db_path`` in this run; its tables exist once this returns."""
    if db_path not in _prefixes:
        prefix = f"{RUN_PREFIX}{len(_prefixes)}_"
        _create_schema(server_url(backend()), prefix)
        _prefixes[db_path] = prefix
    return _prefixes[db_path]


def table_prefixes() -> list[str]:
    """The table prefixes made so far in this run."""
    return list(_prefixes.values())


def _create_schema(url: str, prefix: str) -> None:
    """``create_schema()`` on a store of its own, in a thread with its own event loop.

    The upstream tests build stores synchronously inside a running loop, and a store's
    connection pool belongs to the loop that opened it.
    """

    async def create() -> None:
        store = SQLStore.from_url(url, table_prefix=prefix)
        try:
            await store.create_schema()
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()


def sqlite_file(db_path: str) -> str:
    """A file of this run's temporary directory for ``db_path`` (the same file each time)."""
    global _files
    if _files is None:
        _files = Path(tempfile.mkdtemp(prefix="chatkit-upstream-"))
        atexit.register(shutil.rmtree, _files, ignore_errors=True)
    return str(_files / (re.sub(r"[^\w.-]", "_", db_path) + ".db"))


def store_options(db_path: str) -> dict[str, Any]:
    """Constructor arguments of the chosen backend's store for ``db_path``."""
    name = backend()
    if name == "memory":
        return {}
    if name == "sqlite-file":
        return {"path": sqlite_file(db_path)}
    if name == "sqlite-memory":
        return {"path": db_path}  # our SQLiteStore takes SQLite URI filenames as they are
    return {"url": server_url(name), "table_prefix": table_prefix(db_path)}


class SQLiteStore(BASES[backend()]):  # type: ignore[misc]
    """The store the upstream tests build with ``SQLiteStore(db_path)``; see the module."""

    def __init__(self, db_path: str | None = None) -> None:
        self.db_path = db_path or "file:chatkit?mode=memory&cache=shared"
        super().__init__(**store_options(self.db_path))
        OPEN_STORES.append(self)
