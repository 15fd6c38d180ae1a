"""The SQL stores write and read every ``data`` value through one seam: ``blobs=``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest_asyncio
from chatkit.types import ThreadMetadata
from sqlalchemy import select

from chatkit_stores import SQLStore
from chatkit_stores.sql.blobs import Blobs
from chatkit_stores.testing import models
from conftest import TEST_PREFIX
from test_sql import url  # noqa: F401  (the fixture: each SQL backend)

TENANT = f"blobs-{uuid.uuid4().hex}"
CTX = {"user_id": TENANT}


class Reversed(Blobs):
    """Stores the JSON reversed behind a marker, and records every row it was given."""

    def __init__(self) -> None:
        self.sealed: list[tuple[str, ...]] = []
        self.opened: list[tuple[str, ...]] = []

    def seal(self, json: str, table: str, tenant: str, *ids: str) -> str:
        self.sealed.append((table, tenant, *ids))
        return "rev:" + json[::-1]

    def open(self, blob: str, table: str, tenant: str, *ids: str) -> str:
        self.opened.append((table, tenant, *ids))
        assert blob.startswith("rev:"), blob
        return blob[4:][::-1]


@pytest_asyncio.fixture
async def store(url: str) -> AsyncIterator[SQLStore[Any]]:  # noqa: F811
    async with SQLStore.from_url(url, table_prefix=TEST_PREFIX, blobs=Reversed()) as store:
        await store.create_schema()
        yield store


async def stored_data(store: SQLStore[Any]) -> list[str]:
    """Every ``data`` value in the store's tables, as stored."""
    values = []
    async with store.engine.connect() as conn:
        for table in (store.tables.threads, store.tables.items, store.tables.attachments):
            query = select(table.c.data).where(table.c.tenant == TENANT)
            values += [row[0] for row in await conn.execute(query)]
    return values


async def test_every_blob_is_sealed_and_opened_with_its_row(store: SQLStore[Any]) -> None:
    blobs = store.blobs
    assert isinstance(blobs, Reversed)
    thread = ThreadMetadata(id="thr_b", created_at=datetime(2026, 1, 1), title="t")
    item = models.user_message("thr_b")
    attachment = models.file_attachment("att_b")
    msg = item.id
    await store.save_thread(thread, CTX)
    await store.add_thread_item("thr_b", item, CTX)
    await store.save_item("thr_b", item, CTX)
    await store.save_attachment(attachment, CTX)
    assert blobs.sealed == [
        ("threads", TENANT, "thr_b"),
        ("items", TENANT, "thr_b", msg),
        ("items", TENANT, "thr_b", msg),
        ("attachments", TENANT, "att_b"),
    ]
    assert all(value.startswith("rev:") for value in await stored_data(store))

    loaded = await store.load_thread("thr_b", CTX)
    assert loaded == thread
    assert await store.load_item("thr_b", msg, CTX) == item
    assert await store.load_attachment("att_b", CTX) == attachment
    assert blobs.opened == [
        ("threads", TENANT, "thr_b"),
        ("items", TENANT, "thr_b", msg),
        ("attachments", TENANT, "att_b"),
    ]
    assert (await store.load_threads(10, None, "asc", CTX)).data == [thread]
    assert (await store.load_thread_items("thr_b", None, 10, "desc", CTX)).data == [item]
    assert blobs.opened[3][:2] == ("threads", TENANT)
    assert blobs.opened[4][:3] == ("items", TENANT, "thr_b")

    loaded.title = "renamed"  # a versioned save: sealed again, and the JSON compared is plain
    await store.save_thread(loaded, CTX)
    assert (await store.load_thread("thr_b", CTX)).title == "renamed"
    changed = await store.update_attachment(TENANT, "att_b", lambda a: a.model_copy())
    assert changed == attachment
    assert blobs.sealed[-1] == ("attachments", TENANT, "att_b")
    assert all(value.startswith("rev:") for value in await stored_data(store))
