"""Encryption at rest on every backend: the conformance suite with encryption on, tampering,
mixed tables, rotation, ``rekey`` (interrupted, resumed, racing saves) and ``doctor``."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import Store
from chatkit.types import ThreadMetadata
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatkit_stores import MemoryStore, MySQLStore, PostgresStore, SQLiteStore, SQLStore
from chatkit_stores.blobs import PLAIN
from chatkit_stores.cli import main
from chatkit_stores.encryption import (
    ENVIRONMENT_VARIABLE,
    KeyRing,
    MissingKeyError,
    TamperedDataError,
    key_id_of,
    new_key,
)
from chatkit_stores.operations.doctor import doctor
from chatkit_stores.operations.rekey import rekey
from chatkit_stores.sql.blobs import Encrypted
from chatkit_stores.testing import await_points_of, models
from chatkit_stores.testing.interleave import interleavings
from conftest import TEST_PREFIX, new_tables_dropped
from test_stores import SQLStoreTests
from test_stores import TestMemoryStore as MemoryStoreTests

PREFIX = "ckenc_"
"""This module's own tables: rekey and doctor walk every tenant of a table set."""

K1_RAW, K2_RAW = new_key(), new_key()
K1 = KeyRing({"k1": K1_RAW})
ROTATED = KeyRing({"k2": K2_RAW, "k1": K1_RAW})  # k2 made current, k1 still readable
K2 = KeyRing({"k2": K2_RAW})  # k1 retired
DEFLATING = KeyRing({"k2": K2_RAW, "k1": K1_RAW}, compress=True)
SECRET = "the secret words"
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "encryption.py"


# --- the conformance suite with encryption on --------------------------------------------------


class EncryptedSQLTests(SQLStoreTests):
    """Every conformance test on a store that seals every blob (reopened with the same keys)."""

    @pytest_asyncio.fixture
    async def reopen(self) -> AsyncIterator[Any]:
        opened: list[SQLStore[Any]] = []

        async def reopen(store: Store[Any]) -> Store[Any]:
            assert isinstance(store, SQLStore) and isinstance(store.blobs, Encrypted)
            await store.close()
            url = store.engine.url.render_as_string(hide_password=False)
            keys = store.blobs.keys
            opened.append(type(store)(url, table_prefix=store.table_prefix, encryption=keys))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()


class TestEncryptedSQLiteStore(EncryptedSQLTests):
    @pytest_asyncio.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore[Any]]:
        async with SQLiteStore(tmp_path / "chat.db", encryption=ROTATED) as store:
            yield store


class TestEncryptedPostgresStore(EncryptedSQLTests):
    keys = ROTATED

    @pytest_asyncio.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[PostgresStore[Any]]:
        options = {"table_prefix": TEST_PREFIX, "encryption": self.keys}
        async with PostgresStore(postgres_url, **options) as store:
            yield store


class TestDeflatedPostgresStore(TestEncryptedPostgresStore):
    """Every conformance test with each row deflated before it is sealed (``compress=True``)."""

    keys = DEFLATING


class TestEncryptedMySQLStore(EncryptedSQLTests):
    @pytest_asyncio.fixture
    async def store(self, mysql_url: str) -> AsyncIterator[MySQLStore[Any]]:
        async with MySQLStore(mysql_url, table_prefix=TEST_PREFIX, encryption=ROTATED) as store:
            yield store


class TestEncryptedMemoryStore(MemoryStoreTests):
    """Every conformance test on a memory store that keeps every model sealed."""

    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[MemoryStore[Any]]:
        store: MemoryStore[Any] = MemoryStore(encryption=ROTATED)
        yield store
        kept = [row.kept for row in [*store._threads.values(), *store._items.values()]]
        kept += [row.kept for row in store._attachments.values()]
        assert all(isinstance(blob, str) and key_id_of(blob) == "k2" for blob in kept), kept


# --- one database, emptied for each test --------------------------------------------------------


@pytest.fixture(scope="module")
def server_urls(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The servers' URLs; this module's tables there are dropped after it."""
    urls: dict[str, str] = {}
    stack = []
    for backend in ("postgres", "mysql"):
        url = str(request.getfixturevalue(f"{backend}_url"))
        context = new_tables_dropped(url, PREFIX)
        urls[backend] = context.__enter__()
        stack.append(context)
    try:
        yield urls
    finally:
        for context in reversed(stack):
            context.__exit__(None, None, None)


@pytest_asyncio.fixture(params=["sqlite", "postgres", "mysql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with this module's tables, empty."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'chat.db'}"
    else:
        url = request.getfixturevalue("server_urls")[request.param]
    async with SQLStore.from_url(url, table_prefix=PREFIX) as admin:
        await admin.create_schema()
        async with admin.engine.begin() as conn:
            for table in (admin.tables.threads, admin.tables.items, admin.tables.attachments):
                await conn.execute(delete(table))
    yield url


def open_store(url: str, keys: KeyRing | None) -> SQLStore[Any]:
    """A store on this module's tables, sealing with ``keys`` (None: no encryption)."""
    return SQLStore.from_url(url, table_prefix=PREFIX, encryption=keys)


async def stored(store: SQLStore[Any]) -> list[str]:
    """Every ``data`` value of every tenant, as stored."""
    values = []
    async with store.engine.connect() as conn:
        for table in (store.tables.threads, store.tables.items, store.tables.attachments):
            values += [row[0] for row in await conn.execute(select(table.c.data))]
    return values


async def fill(store: SQLStore[Any], tenant: str, threads: int = 2, items: int = 3) -> list[str]:
    """``threads`` threads, each with ``items`` items and an attachment; the thread ids."""
    context = {"tenant_id": tenant}
    ids = []
    for _ in range(threads):
        thread = models.thread(title=SECRET)
        await store.save_thread(thread, context)
        for _ in range(items):
            await store.add_thread_item(thread.id, models.user_message(thread.id), context)
        attachment = models.file_attachment(f"atc_{thread.id}", thread_id=thread.id)
        await store.save_attachment(attachment, context)
        ids.append(thread.id)
    return ids


async def read_all(store: SQLStore[Any], tenant: str, thread_ids: list[str]) -> list[Any]:
    """Everything of ``tenant`` through every read path: threads, pages, items, attachments."""
    context = {"tenant_id": tenant}
    seen: list[Any] = list((await store.load_threads(100, None, "asc", context)).data)
    for thread_id in thread_ids:
        seen.append(await store.load_thread(thread_id, context))
        page = await store.load_thread_items(thread_id, None, 100, "asc", context)
        seen += page.data
        seen += [await store.load_item(thread_id, item.id, context) for item in page.data]
        seen.append(await store.load_attachment(f"atc_{thread_id}", context))
    return seen


def tenant() -> str:
    return f"enc-{uuid.uuid4().hex}"


# --- round trips, what is stored, tampering -------------------------------------------------------


async def test_every_blob_is_sealed_and_reads_back(url: str) -> None:
    who = tenant()
    async with open_store(url, K1) as store:
        ids = await fill(store, who)
        items = await store.load_thread_items(ids[0], None, 10, "desc", {"tenant_id": who})
        blobs = await stored(store)
        assert len(blobs) == 2 + 6 + 2
        assert all(key_id_of(blob) == "k1" for blob in blobs)
        assert not any(SECRET in blob or ids[0] in blob for blob in blobs)
        assert len(await read_all(store, who, ids)) == 2 + 2 * (1 + 3 + 3 + 1)
        assert len(items.data) == 3
    async with open_store(url, K1) as reopened:  # another process with the same keys
        assert (await reopened.load_thread(ids[0], {"tenant_id": who})).title == SECRET


async def _copy_data(store: SQLStore[Any], table_name: str, source: Any, target: Any) -> None:
    """Overwrite the ``data`` of the row ``target`` with the one of row ``source`` (raw SQL)."""
    table = getattr(store.tables, table_name)
    async with store.engine.begin() as conn:
        blob = (await conn.execute(select(table.c.data).where(*source))).scalar_one()
        await conn.execute(update(table).where(*target).values(data=blob))


async def test_a_blob_copied_into_another_row_or_tenant_fails(url: str) -> None:
    alice, mallory = tenant(), tenant()
    async with open_store(url, K1) as store:
        alices = await fill(store, alice, threads=1)
        mallorys = await fill(store, mallory, threads=1)
        t, i = store.tables.threads, store.tables.items
        # Alice's thread into Mallory's thread row: Mallory must not read Alice's thread.
        await _copy_data(
            store,
            "threads",
            [t.c.tenant == alice, t.c.id == alices[0]],
            [t.c.tenant == mallory, t.c.id == mallorys[0]],
        )
        with pytest.raises(TamperedDataError, match="copied from another row or tenant"):
            await store.load_thread(mallorys[0], {"tenant_id": mallory})
        with pytest.raises(TamperedDataError):
            await store.load_threads(10, None, "asc", {"tenant_id": mallory})
        # One of Alice's items into another item row of hers: the page and the item both fail.
        page = await store.load_thread_items(alices[0], None, 10, "asc", {"tenant_id": alice})
        first, second = page.data[0].id, page.data[1].id
        await _copy_data(
            store,
            "items",
            [i.c.tenant == alice, i.c.id == first],
            [i.c.tenant == alice, i.c.id == second],
        )
        with pytest.raises(TamperedDataError, match=f"id='{second}'"):
            await store.load_item(alices[0], second, {"tenant_id": alice})
        with pytest.raises(TamperedDataError):
            await store.load_thread_items(alices[0], None, 10, "asc", {"tenant_id": alice})
        assert (await store.load_item(alices[0], first, {"tenant_id": alice})).id == first


async def alter_thread(store: SQLStore[Any], tenant: str) -> None:
    """Change one base64 character of the tenant's (one) thread blob."""
    t = store.tables.threads
    async with store.engine.begin() as conn:
        blob = (await conn.execute(select(t.c.data).where(t.c.tenant == tenant))).scalar_one()
        flipped = blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]
        await conn.execute(update(t).where(t.c.tenant == tenant).values(data=flipped))


async def test_an_altered_blob_fails(url: str) -> None:
    who = tenant()
    async with open_store(url, K1) as store:
        ids = await fill(store, who, threads=1, items=1)
        await alter_thread(store, who)
        with pytest.raises(TamperedDataError, match="fails authentication"):
            await store.load_thread(ids[0], {"tenant_id": who})


async def test_a_store_without_the_key_refuses_encrypted_rows(url: str) -> None:
    who = tenant()
    async with open_store(url, K1) as store:
        ids = await fill(store, who, threads=1)
    async with open_store(url, None) as plain:
        with pytest.raises(MissingKeyError, match="this store has no encryption keys"):
            await plain.load_thread(ids[0], {"tenant_id": who})
        with pytest.raises(MissingKeyError):
            await plain.load_thread_items(ids[0], None, 10, "asc", {"tenant_id": who})
    async with open_store(url, K2) as other_key:
        with pytest.raises(MissingKeyError, match="sealed with key 'k1', which is not in"):
            await other_key.load_thread(ids[0], {"tenant_id": who})


async def test_mixed_plaintext_and_encrypted_rows(url: str) -> None:
    who = tenant()
    async with open_store(url, None) as plain:
        old = await fill(plain, who, threads=1, items=2)
    async with open_store(url, K1) as store:
        context = {"tenant_id": who}
        new = await fill(store, who, threads=1, items=2)
        for thread_id in old:  # new items in an old thread
            await store.add_thread_item(thread_id, models.user_message(thread_id), context)
        assert len(await read_all(store, who, old + new)) == 2 + (1 + 3 + 3 + 1) + (1 + 2 + 2 + 1)
        page = await store.load_thread_items(old[0], None, 10, "asc", context)
        assert len(page.data) == 3
        kinds = {key_id_of(blob) for blob in await stored(store)}
        assert kinds == {None, "k1"}


async def test_rotation_with_reads_in_between(url: str) -> None:
    who = tenant()
    context = {"tenant_id": who}
    async with open_store(url, K1) as store:
        before = await fill(store, who)
    async with open_store(url, ROTATED) as store:  # k2 current, k1 still in the ring
        assert len(await read_all(store, who, before)) == 2 + 2 * (1 + 3 + 3 + 1)
        after = await fill(store, who)
        assert {key_id_of(blob) for blob in await stored(store)} == {"k1", "k2"}
        renamed = await store.load_thread(before[0], context)
        renamed.title = "renamed"
        await store.save_thread(renamed, context)  # an old row, written again: now k2
        everything = await read_all(store, who, before + after)
        report = await rekey(url, ROTATED, prefix=PREFIX, batch_size=3)
        assert report.ok and report.former == {"k1": 2 + 6 + 2 - 1}  # all but the renamed
        assert {key_id_of(blob) for blob in await stored(store)} == {"k2"}
    async with open_store(url, K2) as store:  # k1 retired
        assert await read_all(store, who, before + after) == everything
        assert (await store.load_thread(before[0], context)).title == "renamed"


# --- MemoryStore: what it keeps is sealed too ---------------------------------------------------


async def fill_memory(store: MemoryStore[Any], tenant: str) -> tuple[str, list[str]]:
    """A thread titled and two messages saying ``SECRET``, an attachment; the ids."""
    context = {"tenant_id": tenant}
    thread = models.thread(title=f"{SECRET} (title)")
    await store.save_thread(thread, context)
    items = [models.user_message(thread.id, text=SECRET) for _ in range(2)]
    for item in items:
        await store.add_thread_item(thread.id, item, context)
    await store.save_attachment(models.file_attachment(f"atc_{thread.id}", thread.id), context)
    return thread.id, [item.id for item in items]


def memory_reads(store: MemoryStore[Any], tenant: str, thread_id: str) -> list[Any]:
    """Every read of a tenant's thread, items and attachment, as coroutine factories."""
    context = {"tenant_id": tenant}
    return [
        lambda: store.load_thread(thread_id, context),
        lambda: store.load_threads(10, None, "asc", context),
        lambda: store.load_thread_items(thread_id, None, 10, "desc", context),
        lambda: store.load_attachment(f"atc_{thread_id}", context),
    ]


def strings_in(value: Any, seen: dict[int, Any] | None = None) -> Iterator[str]:
    """Every string reachable from ``value`` through containers, models and this package's
    objects (a model as its JSON)."""
    seen = {} if seen is None else seen
    if id(value) in seen:
        return
    seen[id(value)] = value  # kept alive: a temporary's id could be reused
    if isinstance(value, str):
        yield value
    elif isinstance(value, BaseModel):
        yield value.model_dump_json()
    elif isinstance(value, dict):
        for pair in value.items():
            yield from strings_in(pair, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for element in value:
            yield from strings_in(element, seen)
    elif type(value).__module__.startswith("chatkit_stores") and hasattr(value, "__dict__"):
        yield from strings_in(vars(value), seen)


async def test_memory_store_keeps_no_plaintext_with_encryption() -> None:
    plain: MemoryStore[Any] = MemoryStore()
    await fill_memory(plain, "acme")
    assert any(SECRET in text for text in strings_in(plain)), "the walk finds what is kept"
    keys = KeyRing({"k1": K1_RAW})  # its cache keeps the texts it sealed and opened lately
    store: MemoryStore[Any] = MemoryStore(encryption=keys)
    thread_id, item_ids = await fill_memory(store, "acme")
    loaded = [await read() for read in memory_reads(store, "acme", thread_id)]
    assert SECRET in str(loaded[2])  # read back whole
    page = await store.load_thread_items(thread_id, None, 10, "asc", {"tenant_id": "acme"})
    assert [item.id for item in page.data] == item_ids
    del loaded, page  # the store remembers the JSON of a thread it returned while it lives
    assert any(SECRET in text for text in strings_in(store)), "the ring's cache"
    keys.forget()
    kept = list(strings_in(store))
    assert not any(SECRET in text or "report final" in text for text in kept)
    sealed = [t for t in kept if t.startswith("ckenc:") and t not in keys.current_headers]
    assert len(sealed) == 1 + 2 + 1 and all(key_id_of(blob) == "k1" for blob in sealed)


async def test_memory_store_refuses_a_tampered_or_copied_envelope() -> None:
    keys = KeyRing({"k1": K1_RAW})  # its cache keeps the texts it sealed and opened lately
    store: MemoryStore[Any] = MemoryStore(encryption=keys)
    thread_id, item_ids = await fill_memory(store, "acme")
    other_id, _ = await fill_memory(store, "globex")
    context = {"tenant_id": "acme"}
    row = store._threads[("acme", thread_id)]
    assert isinstance(row.kept, str)
    sealed = row.kept
    row.kept = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]  # one byte
    with pytest.raises(TamperedDataError, match="fails authentication"):
        await store.load_thread(thread_id, context)
    with pytest.raises(TamperedDataError):
        await store.load_threads(10, None, "asc", context)
    row.kept = store._threads[("globex", other_id)].kept  # another tenant's thread
    with pytest.raises(TamperedDataError, match="copied from another row or tenant"):
        await store.load_thread(thread_id, context)
    row.kept = sealed
    assert (await store.load_thread(thread_id, context)).id == thread_id
    first, second = (store._items[("acme", thread_id, item_id)] for item_id in item_ids)
    second.kept = first.kept  # one of the thread's items into another
    with pytest.raises(TamperedDataError, match=f"id='{item_ids[1]}'"):
        await store.load_item(thread_id, item_ids[1], context)
    with pytest.raises(TamperedDataError):
        await store.load_thread_items(thread_id, None, 10, "asc", context)
    assert (await store.load_item(thread_id, item_ids[0], context)).id == item_ids[0]
    attachment = store._attachments[("acme", f"atc_{thread_id}")]
    attachment.kept = store._attachments[("globex", f"atc_{other_id}")].kept
    with pytest.raises(TamperedDataError):
        await store.load_attachment(f"atc_{thread_id}", context)


async def test_memory_store_rotation_with_reads_in_between() -> None:
    store: MemoryStore[Any] = MemoryStore(encryption=K1)
    before, _ = await fill_memory(store, "acme")
    expected = [await read() for read in memory_reads(store, "acme", before)]
    store.blobs = Encrypted(ROTATED)  # k2 current, k1 still in the ring
    assert [await read() for read in memory_reads(store, "acme", before)] == expected
    after, _ = await fill_memory(store, "acme")
    renamed = await store.load_thread(before, {"tenant_id": "acme"})
    renamed.title = "renamed"
    await store.save_thread(renamed, {"tenant_id": "acme"})  # an old row, written again
    kept = {key: row.kept for key, row in store._threads.items()}
    assert {key_id_of(blob) for blob in kept.values()} == {"k2"}
    items = {key[1]: key_id_of(str(row.kept)) for key, row in store._items.items()}
    assert items == {before: "k1", after: "k2"}
    store.blobs = Encrypted(K2)  # k1 retired before every row was sealed again
    assert (await store.load_thread(before, {"tenant_id": "acme"})).title == "renamed"
    for read in memory_reads(store, "acme", after):
        await read()
    with pytest.raises(MissingKeyError, match="sealed with key 'k1', which is not in"):
        await store.load_thread_items(before, None, 10, "asc", {"tenant_id": "acme"})
    store.blobs = PLAIN  # no keys at all
    with pytest.raises(MissingKeyError, match="this store has no encryption keys"):
        await store.load_thread(after, {"tenant_id": "acme"})


async def test_memory_store_sweeps_and_updates_sealed_attachments() -> None:
    """What the orphan sweep and the attachment stores use reads the clear fields beside the
    envelope, and a change is sealed again."""
    store: MemoryStore[Any] = MemoryStore(encryption=K1)
    context = {"tenant_id": "acme"}
    thread_id, _ = await fill_memory(store, "acme")
    await store.save_attachment(models.file_attachment("atc_orphan"), context)
    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert await store.orphaned_attachments(later) == [("acme", "atc_orphan")]
    assert await store.attachment_keys() == [("acme", "atc_orphan"), ("acme", f"atc_{thread_id}")]

    def adopt(attachment: Any) -> Any:
        attachment.thread_id = thread_id
        return attachment

    changed = await store.update_attachment("acme", "atc_orphan", adopt)
    assert changed is not None and changed.thread_id == thread_id
    assert await store.orphaned_attachments(later) == []
    assert key_id_of(str(store._attachments[("acme", "atc_orphan")].kept)) == "k1"
    assert (await store.load_attachment("atc_orphan", context)).thread_id == thread_id
    await store.delete_thread(thread_id, context)
    assert store._attachments == {} and store._items == {} and store._threads == {}


# --- rekey ----------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


async def test_rekey_interrupted_then_resumed_seals_everything_once(url: str) -> None:
    who = tenant()
    async with open_store(url, None) as plain:
        ids = await fill(plain, who, threads=3, items=4)  # 3 threads, 12 items, 3 attachments
    async with open_store(url, K1) as store:
        expected = await read_all(store, who, ids)

    class Stop:
        def __init__(self, label: str, total: int | None) -> None:
            self.label, self.total = label, total

        def advance(self, count: int) -> None:
            if self.label == "items":
                raise Interrupted  # after the threads and the first batch of items

        def close(self) -> None:
            pass

    with pytest.raises(Interrupted):
        await rekey(url, ROTATED, prefix=PREFIX, batch_size=5, progress=Stop)
    async with open_store(url, ROTATED) as store:
        keys = [key_id_of(blob) for blob in await stored(store)]
        assert keys.count("k2") == 3 + 5 and keys.count(None) == 7 + 3
        assert await read_all(store, who, ids) == expected  # half done: all readable

    totals: list[tuple[str, int | None]] = []

    class Count(Stop):
        def __init__(self, label: str, total: int | None) -> None:
            super().__init__(label, total)
            totals.append((label, total))

        def advance(self, count: int) -> None:
            pass

    resumed = await rekey(url, ROTATED, prefix=PREFIX, batch_size=5, progress=Count)
    assert totals == [("threads", 0), ("items", 7), ("attachments", 3)]
    assert resumed.resealed == {"threads": 0, "items": 7, "attachments": 3}
    assert resumed.former == {"plaintext": 10} and resumed.ok
    again = await rekey(url, ROTATED, prefix=PREFIX, batch_size=5)
    assert sum(again.resealed.values()) == 0 and again.ok  # idempotent
    async with open_store(url, K2) as store:
        assert {key_id_of(blob) for blob in await stored(store)} == {"k2"}
        assert await read_all(store, who, ids) == expected


@pytest.mark.parametrize("writer_keys", [None, ROTATED], ids=["plaintext-app", "rotated-app"])
async def test_rekey_never_undoes_a_save_made_while_it_runs(
    url: str, writer_keys: KeyRing | None
) -> None:
    """A save of the same row between rekey's read and its write wins, whatever its keys.

    The save only changes the case of a letter: MySQL's default collation would call the two
    blobs equal, so rekey compares bytes.
    """
    who = tenant()
    context = {"tenant_id": who}
    async with open_store(url, writer_keys) as writer:

        async def setup() -> ThreadMetadata:
            thread = models.thread(title="hello")
            async with open_store(url, None) as plain:  # an old plaintext row
                await plain.save_thread(thread, context)
            return thread

        async def run_rekey(thread: ThreadMetadata) -> Any:
            return await rekey(url, ROTATED, prefix=PREFIX, batch_size=10)

        async def rename(thread: ThreadMetadata) -> None:
            thread.title = "Hello"
            await writer.save_thread(thread, context)

        points = await_points_of((AsyncConnection, ("execute",)))
        runs = 0
        with points():
            async for thread, run in interleavings(setup, run_rekey, rename):
                report, _ = run.results()
                runs += 1
                async with open_store(url, ROTATED) as reader:
                    loaded = await reader.load_thread(thread.id, context)
                assert loaded.title == "Hello", f"rekey paused at {run.point} ({run.at}) undid it"
                assert report.ok
        assert runs >= 4  # paused before its reads, its write, and the re-read


async def test_rekey_reports_rows_it_cannot_open_and_leaves_them(url: str) -> None:
    who = tenant()
    async with open_store(url, K1) as store:
        ids = await fill(store, who, threads=1, items=1)
        await alter_thread(store, who)
    seen: list[str] = []
    report = await rekey(
        url, ROTATED, prefix=PREFIX, on_unreadable=lambda row: seen.append(str(row))
    )
    assert not report.ok and report.unreadable == 1
    assert len(seen) == 1 and f"id={ids[0]!r}" in seen[0] and "fails authentication" in seen[0]
    assert report.resealed == {"threads": 0, "items": 1, "attachments": 1}
    missing = await rekey(url, K2, prefix=PREFIX)  # k1 not in the ring: nothing can open
    assert missing.unreadable == 1 and sum(missing.resealed.values()) == 0


# --- doctor and the command line ------------------------------------------------------------------


async def test_doctor_counts_rows_per_key_and_opens_them(url: str) -> None:
    who = tenant()
    async with open_store(url, None) as plain:
        await fill(plain, who, threads=1, items=1)
    async with open_store(url, K1) as store:
        ids = await fill(store, who, threads=1, items=2)
    blind = await doctor(url, prefix=PREFIX)
    assert blind.ok and blind.keys == {"plaintext": 3, "k1": 4} and blind.unchecked == 4
    assert "4 encrypted rows not checked" in (blind.key_summary() or "")
    checked = await doctor(url, prefix=PREFIX, keys=ROTATED)
    assert checked.ok and checked.unchecked == 0 and sum(checked.checked.values()) == 7
    assert checked.key_summary() == "rows by key: 4 k1, 3 plaintext"
    async with open_store(url, K1) as store:
        t = store.tables.threads
        await _copy_data(
            store,
            "threads",
            [t.c.id == ids[0]],
            [t.c.id != ids[0]],
        )
    problems: list[str] = []
    bad = await doctor(
        url, prefix=PREFIX, keys=ROTATED, on_problem=lambda p: problems.append(str(p))
    )
    assert not bad.ok and len(problems) == 1 and "copied from another row" in problems[0]


def test_rekey_command(url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import asyncio

    who = tenant()

    async def prepare() -> None:
        async with open_store(url, None) as plain:
            await fill(plain, who, threads=1, items=2)

    asyncio.run(prepare())
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    assert main(["rekey", url, "--table-prefix", PREFIX]) == 2
    assert f"{ENVIRONMENT_VARIABLE} is not set" in capsys.readouterr().err
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "k1:c2hvcnQ=")
    assert main(["rekey", url, "--table-prefix", PREFIX]) == 2
    assert "key 'k1' has 5 bytes" in capsys.readouterr().err
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, f"k2:{K2_RAW},k1:{K1_RAW}")
    assert main(["rekey", url, "--table-prefix", PREFIX, "-q"]) == 0
    out = capsys.readouterr().out
    assert "sealed 1 thread, 2 items, 1 attachment with key 'k2' (was: 4 plaintext)" in out
    assert main(["doctor", url, "--table-prefix", PREFIX]) == 0
    assert "rows by key: 4 k2" in capsys.readouterr().out
    assert main(["rekey", url, "--table-prefix", PREFIX, "-q"]) == 0
    assert "sealed 0 threads, 0 items, 0 attachments with key 'k2'" in capsys.readouterr().out

    async def headers() -> set[str]:
        async with open_store(url, DEFLATING) as store:
            return {blob[:11] for blob in await stored(store)}

    assert main(["rekey", url, "--table-prefix", PREFIX, "-q", "--compress"]) == 0
    assert "sealed 1 thread, 2 items, 1 attachment with key 'k2'" in capsys.readouterr().out
    assert asyncio.run(headers()) == {"ckenc:2:k2:"}
    assert main(["rekey", url, "--table-prefix", PREFIX, "-q"]) == 0  # never inflates
    assert "sealed 0 threads" in capsys.readouterr().out
    assert asyncio.run(headers()) == {"ckenc:2:k2:"}
    assert main(["doctor", url, "--table-prefix", PREFIX]) == 0
    assert "rows by key: 4 k2" in capsys.readouterr().out


async def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, f"k1:{K1_RAW}")
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("example_encryption", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.keys.ids == ["k1"]
    await module.store.close()
    title, data = await module.sealed_round_trip(f"sqlite:///{tmp_path / 'x.db'}", module.keys)
    assert title == "Quarterly numbers"
    assert data.startswith("ckenc:1:k1:") and "Quarterly" not in data
    long_title, deflated = await module.deflated_round_trip(f"sqlite:///{tmp_path / 'z.db'}")
    assert long_title.startswith("Quarterly numbers, again") and "Quarterly" not in deflated
    assert deflated.startswith("ckenc:2:k1:") and len(deflated) < len(long_title) / 4
