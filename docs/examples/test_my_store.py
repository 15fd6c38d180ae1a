"""The conformance suite run against a store: here SQLiteStore stands in for yours.

Run: pytest docs/examples/test_my_store.py
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chatkit_stores import SQLiteStore
from chatkit_stores.testing import Capabilities, IdTests, StoreTests


class MyStore(SQLiteStore[Any]):
    """Your store. (Here: chatkit-stores' SQLite store.)"""


# --8<-- [start:five]
class TestMyStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[MyStore]:
        store = MyStore(tmp_path / "chat.db")  # a ready store
        yield store
        await store.close()  # clean up after the yield


# --8<-- [end:five]


# --8<-- [start:context]
@dataclass
class RequestContext:
    org_id: str
    user: str


class TestMyStoreWithMyContext(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[MyStore]:
        store = MyStore(tmp_path / "chat.db", tenant=lambda ctx: ctx.org_id)
        yield store
        await store.close()

    @pytest.fixture
    def make_context(self) -> Callable[[], RequestContext]:
        return lambda: RequestContext(org_id=uuid.uuid4().hex, user="tester")


# --8<-- [end:context]


# --8<-- [start:capabilities]
class TestMyStoreCapabilities(StoreTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[MyStore]:
        store = MyStore(tmp_path / "chat.db")
        yield store
        await store.close()

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        return Capabilities(nul_in_text=False)  # its tests skip, naming the flag

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[MyStore], Awaitable[MyStore]]:
        async def reopen(store: MyStore) -> MyStore:
            await store.close()
            return MyStore(tmp_path / "chat.db")  # the same storage

        return reopen


# --8<-- [end:capabilities]


# --8<-- [start:policies]
class UuidIdStore(MyStore):
    """A store with its own id scheme: ``thread-<uuid4>``, no ChatKit prefix."""

    def generate_thread_id(self, context: Any) -> str:
        return f"thread-{uuid.uuid4()}"


class TestUuidIdStore(IdTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[UuidIdStore]:
        store = UuidIdStore(tmp_path / "chat.db")
        yield store
        await store.close()

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        # A policy of this package, not ChatKit's contract: turn it off, saying why.
        return Capabilities.opt_out(id_prefixes="our ids are thread-<uuid4>")


# --8<-- [end:policies]


class ShortIdStore(MyStore):
    """A store with a known gap: its thread ids have 32 random bits (ChatKit's default)."""

    def generate_thread_id(self, context: Any) -> str:
        return f"thr_{secrets.token_hex(4)}"


# --8<-- [start:xfail]
class TestShortIdStore(IdTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ShortIdStore]:
        store = ShortIdStore(tmp_path / "chat.db")
        yield store
        await store.close()

    @pytest.mark.asyncio
    @pytest.mark.xfail(reason="thread ids have 32 random bits until we migrate", strict=True)
    async def test_generated_id_entropy(self, store: ShortIdStore, context: Any) -> None:
        await super().test_generated_id_entropy(store, context)


# --8<-- [end:xfail]
