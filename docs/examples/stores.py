"""Building each store, and a store's life: schema, use, close."""

from __future__ import annotations

import os
from typing import Any

from chatkit.types import ThreadMetadata

# --8<-- [start:constructors]
from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLiteStore, SQLStore

store = SQLiteStore("chat.db")  # a path or a sqlite:// URL
store = PostgresStore("postgresql://user@host/db")  # plain or +asyncpg URL
store = MySQLStore("mysql://root@127.0.0.1/app")  # plain or +aiomysql URL (MariaDB too)
store = SQLStore.from_url(os.environ.get("DATABASE_URL", "sqlite:///chat.db"))  # by scheme
store = MemoryStore()  # no I/O, nothing kept; tests and demos
# --8<-- [end:constructors]


async def lifecycle(url: str) -> list[str]:
    """Create the tables, save a thread, read the titles back; returns them."""
    # --8<-- [start:lifecycle]
    store = SQLStore.from_url(url, table_prefix="chatkit_", max_page_size=1000)
    await store.create_schema()  # idempotent; SQLite does this itself on first use
    await store.close()  # closes the pool

    async with SQLStore.from_url(url) as store:  # or close on leaving the block
        context = {"user_id": "alice"}
        thread_id = store.generate_thread_id(context)
        thread = ThreadMetadata(id=thread_id, title="Hello", created_at=now())
        await store.save_thread(thread, context)
        page = await store.load_threads(limit=20, after=None, order="desc", context=context)
    # --8<-- [end:lifecycle]
    return [t.title or "" for t in page.data]


def now() -> Any:
    """The current time (ChatKit stores naive or aware datetimes alike)."""
    from datetime import datetime

    return datetime.now()
