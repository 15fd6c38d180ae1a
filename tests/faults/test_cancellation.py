"""Store calls cancelled midway (ChatKit writes during CancelledError when a client goes away).

On PostgreSQL and MariaDB the proxy holds the reply to a chosen statement: the server has the
request, the caller waits, and the test cancels it then, deterministically. On SQLite and in
memory, calls are cancelled after 0, 1, 2, ... turns of the event loop, which lands the
cancellation at every await of the call in turn. Afterwards the data is all-or-nothing, no
connection stays checked out or inside a transaction, and the same store still works.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import ThreadItem, ThreadMetadata

from chatkit_stores import MemoryStore, SQLiteStore, SQLStore
from chatkit_stores.testing import models

from .checks import all_items, busy_sessions, eventually, thread_exists
from .conftest import Database
from .proxy import FaultProxy

CANCEL_TIMEOUT = 10.0
ITEMS = 3
SWEEP_TURNS = 25
CONTEXT = {"user_id": "alice"}
COMMIT = rb"\bCOMMIT\b"  # not READ COMMITTED, not SET AUTOCOMMIT


@dataclass
class Conversation:
    """A thread with items and an attachment, as saved before the cancelled call."""

    thread: ThreadMetadata
    items: list[ThreadItem]
    attachment_id: str


async def conversation(store: Store[Any]) -> Conversation:
    thread = models.thread()
    await store.save_thread(thread, CONTEXT)
    items: list[ThreadItem] = [models.user_message(thread.id, text=f"m{i}") for i in range(ITEMS)]
    for item in items:
        await store.add_thread_item(thread.id, item, CONTEXT)
    attachment = models.file_attachment(thread_id=thread.id)
    await store.save_attachment(attachment, CONTEXT)
    return Conversation(thread, items, attachment.id)


def operation(name: str, store: Store[Any], saved: Conversation) -> Callable[[], Awaitable[None]]:
    """The call to cancel, on the saved conversation."""
    thread = saved.thread
    if name == "save_thread":
        renamed = thread.model_copy(update={"title": "renamed"})
        return lambda: store.save_thread(renamed, CONTEXT)
    if name == "add_thread_item":
        item = models.assistant_message(thread.id, text="new")
        return lambda: store.add_thread_item(thread.id, item, CONTEXT)
    return lambda: store.delete_thread(thread.id, CONTEXT)


async def outcome(name: str, store: Store[Any], saved: Conversation) -> str:
    """'done' or 'not done'; fail if the cancelled call left anything half done."""
    thread_id = saved.thread.id
    exists = await thread_exists(store, thread_id, CONTEXT)
    items = await all_items(store, thread_id, CONTEXT)
    try:
        await store.load_attachment(saved.attachment_id, CONTEXT)
        attachment = True
    except NotFoundError:
        attachment = False
    if name == "delete_thread":
        if not exists and not items and not attachment:
            return "done"
        assert exists and attachment and items == saved.items, "delete_thread half done"
        return "not done"
    assert exists and attachment and items[:ITEMS] == saved.items, "unrelated data changed"
    if name == "save_thread":
        title = (await store.load_thread(thread_id, CONTEXT)).title
        assert title in (saved.thread.title, "renamed")
        return "done" if title == "renamed" else "not done"
    assert len(items) in (ITEMS, ITEMS + 1), items
    if len(items) == ITEMS + 1:
        assert items[-1].type == "assistant_message"
        return "done"
    return "not done"


async def cancelled(task: asyncio.Task[None]) -> bool:
    """Cancel ``task``; wait (bounded) for it to end; True if the cancellation interrupted it."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_TIMEOUT)
    assert done, f"a cancelled call did not end within {CANCEL_TIMEOUT} s"
    if task.cancelled():
        return True
    task.result()  # it finished before the cancellation arrived: it must have succeeded
    return False


async def no_connection_checked_out(store: SQLStore[Any]) -> None:
    pool: Any = store.engine.pool

    async def check() -> bool:
        return bool(pool.checkedout() == 0)

    await eventually(check, f"no connection checked out of the pool ({pool.status()})")


async def still_works(store: Store[Any]) -> None:
    thread = models.thread()
    await store.save_thread(thread, CONTEXT)
    item = models.user_message(thread.id)
    await store.add_thread_item(thread.id, item, CONTEXT)
    assert (await all_items(store, thread.id, CONTEXT)) == [item]


TRAPS = [
    ("save_thread", "threads"),
    ("save_thread", "connect"),
    ("add_thread_item", "items"),
    ("delete_thread", "items"),
    ("delete_thread", "attachments"),
    ("delete_thread", "threads"),
    ("delete_thread", "commit"),
]


@pytest.mark.parametrize(("name", "trap"), TRAPS, ids=[f"{n}-{t}" for n, t in TRAPS])
@pytest.mark.asyncio
async def test_cancelled_while_the_server_has_the_request(
    database: Database, proxy: FaultProxy, prefix: str, name: str, trap: str
) -> None:
    direct: SQLStore[Any] = SQLStore.from_url(database.url, table_prefix=prefix)
    store: SQLStore[Any] = SQLStore.from_url(database.through(proxy.port), table_prefix=prefix)
    try:
        saved = await conversation(direct)
        call = operation(name, store, saved)
        if trap == "connect":  # cancelled while the pool makes its first connection
            proxy.stall()
            task = asyncio.ensure_future(call())

            async def connecting() -> bool:
                return proxy.live > 0

            await eventually(connecting, "the store connecting through the proxy")
        else:
            pattern = COMMIT if trap == "commit" else f"{prefix}{trap}".encode()
            seen = proxy.hold_reply_after(pattern)
            task = asyncio.ensure_future(call())
            waiting = asyncio.ensure_future(seen.wait())
            first = asyncio.FIRST_COMPLETED
            await asyncio.wait({task, waiting}, timeout=CANCEL_TIMEOUT, return_when=first)
            waiting.cancel()
            assert seen.is_set(), f"{name} sent no request matching {pattern!r} ({task})"
        assert await cancelled(task), "the call ended before the cancellation"
        await proxy.resume()

        async def server_quiet() -> bool:
            return await busy_sessions(direct, proxy.upstream_ports) == 0

        # Nothing left in a transaction (and a COMMIT sent before the cancel has finished).
        await eventually(server_quiet, "no session of the store busy or in a transaction")
        result = await outcome(name, direct, saved)
        await no_connection_checked_out(store)
        await still_works(store)
        await no_connection_checked_out(store)
    finally:
        await store.close()
        await direct.close()
    print(f"\n[cancel] {database.backend} {name} held at {trap}: cancelled, {result}, consistent")


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
@pytest.mark.parametrize("name", ["save_thread", "add_thread_item", "delete_thread"])
@pytest.mark.asyncio
async def test_cancelled_at_every_await(backend: str, name: str, tmp_path: Path) -> None:
    store: Store[Any] = SQLiteStore(tmp_path / "chat.db") if backend == "sqlite" else MemoryStore()
    counts: Counter[str] = Counter()
    try:
        for turns in range(SWEEP_TURNS):
            saved = await conversation(store)
            task = asyncio.ensure_future(operation(name, store, saved)())
            for _ in range(turns):  # the fault: where the cancellation lands, not a wait
                await asyncio.sleep(0)
            interrupted = await cancelled(task)
            if isinstance(store, SQLStore):
                # A statement the cancelled call left running (a COMMIT, say) ends first.
                await no_connection_checked_out(store)
            result = await outcome(name, store, saved)
            counts[f"{'cancelled' if interrupted else 'finished first'}, {result}"] += 1
        await still_works(store)
    finally:
        if isinstance(store, SQLStore):
            await store.close()
    print(f"\n[cancel] {backend} {name}: {dict(counts)}")
    assert counts.total() == SWEEP_TURNS
    if backend == "sqlite":
        cancelled_mid_call = sum(n for k, n in counts.items() if k.startswith("cancelled"))
        assert cancelled_mid_call > 1, "the sweep must interrupt calls, not only finish them"
