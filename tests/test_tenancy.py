"""Tenant resolution: defaults, overrides, and refusal of contexts without a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chatkit_stores import MemoryStore, SQLiteStore, TenantError, default_tenant, single_tenant
from chatkit_stores.testing import models


@dataclass
class DataclassContext:
    user_id: str


class PydanticContext(BaseModel):
    tenant_id: str | None = None
    user_id: str | None = None


@pytest.mark.parametrize(
    ("context", "tenant"),
    [
        ({"user_id": "u1"}, "u1"),
        ({"tenant_id": "acme", "user_id": "u1"}, "acme"),
        (DataclassContext("u2"), "u2"),
        (PydanticContext(user_id="u3"), "u3"),
        (PydanticContext(tenant_id="t4", user_id="u4"), "t4"),
        ({"user_id": 42}, "42"),
    ],
)
def test_default_resolver(context: Any, tenant: str) -> None:
    assert default_tenant(context) == tenant


@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"user_id": ""},
        {"user_id": None},
        object(),
        PydanticContext(),
        {"user_id": "x" * 256},
        {"user_id": "a\x00b"},
        {"user_id": True},
        {"user_id": ["u"]},
    ],
)
def test_no_tenant_is_refused_with_advice(context: Any) -> None:
    with pytest.raises(TenantError, match="tenant"):
        default_tenant(context)
    with pytest.raises(TenantError, match="single_tenant"):
        default_tenant({})


def test_single_tenant() -> None:
    resolve = single_tenant("solo")
    assert resolve(None) == "solo" and resolve({"user_id": "u"}) == "solo"
    with pytest.raises(TenantError):
        single_tenant("")


@pytest.mark.asyncio
async def test_custom_resolver_separates_tenants(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "t.db", tenant=lambda ctx: ctx["org"]) as store:
        thread = models.thread()
        await store.save_thread(thread, {"org": "a"})
        assert await store.load_thread(thread.id, {"org": "a"}) == thread
        with pytest.raises(Exception, match="not found"):
            await store.load_thread(thread.id, {"org": "b"})


@pytest.mark.asyncio
@pytest.mark.parametrize("make_store", ["memory", "sqlite"])
async def test_context_without_tenant_writes_nothing(make_store: str, tmp_path: Path) -> None:
    store: Any = MemoryStore() if make_store == "memory" else SQLiteStore(tmp_path / "t.db")
    if isinstance(store, SQLiteStore):
        await store.create_schema()
    thread = models.thread()
    item = models.end_of_turn(thread.id)
    writes = [
        store.save_thread(thread, {}),
        store.add_thread_item(thread.id, item, {}),
        store.save_item(thread.id, item, {}),
        store.save_attachment(models.file_attachment(), {}),
        store.delete_thread(thread.id, {}),
        store.load_threads(10, None, "asc", {}),
    ]
    for write in writes:
        with pytest.raises(TenantError):
            await write
    if isinstance(store, SQLiteStore):
        async with store.engine.connect() as conn:
            for table in (store.tables.threads, store.tables.items, store.tables.attachments):
                rows = (await conn.exec_driver_sql(f"SELECT count(*) FROM {table.name}")).scalar()
                assert rows == 0, f"{table.name} must stay empty"
        await store.close()
    else:
        assert not store._threads and not store._items and not store._attachments
