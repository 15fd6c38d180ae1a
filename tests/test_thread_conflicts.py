"""Optimistic concurrency on threads: a save never silently undoes a change saved meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import ActiveStatus, ClosedStatus, ThreadMetadata

from chatkit_stores import MemoryStore, SQLStore
from chatkit_stores.base import StoreBase
from chatkit_stores.concurrency import ThreadConflictError, ThreadConflicts, merge
from conftest import TEST_PREFIX

Opener = Callable[[ThreadConflicts], StoreBase[Any]]


@pytest.fixture
async def open_store(metadata_url: str) -> AsyncIterator[Opener]:
    """Open stores of one backend with a given conflict rule (all closed at the end)."""
    opened: list[StoreBase[Any]] = []

    def open_store(rule: ThreadConflicts = "merge") -> StoreBase[Any]:
        if metadata_url == "memory":
            store: StoreBase[Any] = opened[0] if opened else MemoryStore(thread_conflicts=rule)
            store.thread_conflicts = rule
        else:
            store = SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX, thread_conflicts=rule)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        if isinstance(store, SQLStore):
            await store.close()


@pytest.fixture
def context() -> dict[str, str]:
    return {"user_id": f"u_{uuid.uuid4().hex}"}


async def _new_thread(store: StoreBase[Any], context: dict[str, str]) -> str:
    thread = ThreadMetadata(
        id=f"thr_{uuid.uuid4().hex}", title="first", created_at=datetime.now(timezone.utc)
    )
    await store.save_thread(thread, context)
    return thread.id


async def test_a_rename_made_meanwhile_survives_the_end_of_a_response(
    open_store: Opener, context: dict[str, str]
) -> None:
    # Two servers (two stores) on one database, as with several workers.
    response, other = open_store("merge"), open_store("merge")
    thread_id = await _new_thread(response, context)
    during = await response.load_thread(thread_id, context)  # the response starts
    renamed = await other.load_thread(thread_id, context)
    renamed.title = "renamed by the user"
    await other.save_thread(renamed, context)
    during.status = ClosedStatus(reason="done")  # the response ends
    during.metadata = {"model": "x"}
    await response.save_thread(during, context)

    stored = await other.load_thread(thread_id, context)
    assert stored.title == "renamed by the user"
    assert stored.status == ClosedStatus(reason="done") and stored.metadata == {"model": "x"}


async def test_the_later_save_wins_a_field_both_changed(
    open_store: Opener, context: dict[str, str]
) -> None:
    store = open_store("merge")
    thread_id = await _new_thread(store, context)
    first = await store.load_thread(thread_id, context)
    second = await store.load_thread(thread_id, context)
    first.title, second.title = "first", "second"
    second.metadata = {"b": 1}
    await store.save_thread(second, context)
    first.title = "later"
    await store.save_thread(first, context)
    stored = await store.load_thread(thread_id, context)
    assert (stored.title, stored.metadata) == ("later", {"b": 1})


async def test_raise_refuses_a_stale_save_and_keeps_the_newer_thread(
    open_store: Opener, context: dict[str, str]
) -> None:
    store = open_store("raise")
    thread_id = await _new_thread(store, context)
    stale = await store.load_thread(thread_id, context)
    fresh = await store.load_thread(thread_id, context)
    fresh.title = "fresh"
    await store.save_thread(fresh, context)
    stale.status = ClosedStatus()
    with pytest.raises(ThreadConflictError, match="load it again") as raised:
        await store.save_thread(stale, context)
    assert raised.value.thread_id == thread_id
    stored = await store.load_thread(thread_id, context)
    assert (stored.title, stored.status) == ("fresh", ActiveStatus())
    stored.status = ClosedStatus()  # reloaded: saves
    await store.save_thread(stored, context)
    assert (await store.load_thread(thread_id, context)).status == ClosedStatus()


async def test_overwrite_is_last_save_wins(open_store: Opener, context: dict[str, str]) -> None:
    store = open_store("overwrite")
    thread_id = await _new_thread(store, context)
    stale = await store.load_thread(thread_id, context)
    fresh = await store.load_thread(thread_id, context)
    fresh.title = "fresh"
    await store.save_thread(fresh, context)
    await store.save_thread(stale, context)
    assert (await store.load_thread(thread_id, context)).title == "first"


async def test_saving_the_same_object_again_applies_only_its_new_changes(
    open_store: Opener, context: dict[str, str]
) -> None:
    """ChatKit saves the thread object of a response several times while it streams."""
    store = open_store("merge")
    thread_id = await _new_thread(store, context)
    streaming = await store.load_thread(thread_id, context)
    streaming.metadata = {"step": 1}
    await store.save_thread(streaming, context)
    other = await store.load_thread(thread_id, context)
    other.title = "renamed"
    await store.save_thread(other, context)
    streaming.metadata = {"step": 2}
    await store.save_thread(streaming, context)
    stored = await store.load_thread(thread_id, context)
    assert (stored.title, stored.metadata) == ("renamed", {"step": 2})


async def test_concurrent_writers_each_keep_their_change(
    open_store: Opener, context: dict[str, str]
) -> None:
    stores = [open_store("merge") for _ in range(3)]
    thread_id = await _new_thread(stores[0], context)
    loaded = [await stores[n % 3].load_thread(thread_id, context) for n in range(12)]

    async def write(n: int) -> None:
        loaded[n].metadata = {**loaded[n].metadata, f"writer{n}": n}
        await stores[n % 3].save_thread(loaded[n], context)

    await asyncio.gather(*(write(n) for n in range(12)))
    stored = await stores[0].load_thread(thread_id, context)
    assert stored.metadata == {f"writer{n}": n for n in range(12)}


async def test_a_thread_not_loaded_here_is_saved_whole(
    open_store: Opener, context: dict[str, str]
) -> None:
    store = open_store("raise")
    thread_id = await _new_thread(store, context)
    loaded = await store.load_thread(thread_id, context)
    loaded.title = "renamed"
    await store.save_thread(loaded, context)
    built = ThreadMetadata(id=thread_id, title="rebuilt", created_at=datetime.now(timezone.utc))
    await store.save_thread(built, context)  # not from load_thread: no version to check
    assert (await store.load_thread(thread_id, context)).title == "rebuilt"


@pytest.mark.parametrize("rule", ["merge", "raise"])
async def test_a_delete_wins_over_a_save_of_a_thread_loaded_before_it(
    open_store: Opener, context: dict[str, str], rule: ThreadConflicts
) -> None:
    """A response still streaming into a thread the user deleted does not bring it back."""
    store = open_store(rule)
    thread_id = await _new_thread(store, context)
    loaded = await store.load_thread(thread_id, context)
    await store.delete_thread(thread_id, context)
    loaded.title = "after delete"
    await store.save_thread(loaded, context)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread_id, context)


async def test_a_save_after_a_merge_keeps_what_it_merged(
    open_store: Opener, context: dict[str, str]
) -> None:
    """The same object saved twice after a merge never reverts the change it merged."""
    response, other = open_store("merge"), open_store("merge")
    thread_id = await _new_thread(response, context)
    mine = await response.load_thread(thread_id, context)
    theirs = await other.load_thread(thread_id, context)
    theirs.title = "renamed"
    await other.save_thread(theirs, context)
    mine.metadata = {"step": 1}
    await response.save_thread(mine, context)  # a conflict, merged
    mine.metadata = {"step": 2}
    await response.save_thread(mine, context)  # no conflict: must not write the stale title
    final = await other.load_thread(thread_id, context)
    assert (final.title, final.metadata) == ("renamed", {"step": 2})
    mine.metadata = {"step": 3}
    await response.save_thread(mine, context)
    mine.title = "mine after all"  # a change of the caller's own still wins
    await response.save_thread(mine, context)
    final = await other.load_thread(thread_id, context)
    assert (final.title, final.metadata) == ("mine after all", {"step": 3})


async def test_an_unchanged_save_writes_nothing_over_a_newer_one(
    open_store: Opener, context: dict[str, str]
) -> None:
    """ChatKit saves the thread at the end of every response, most often unchanged."""
    store = open_store("raise")
    thread_id = await _new_thread(store, context)
    unchanged = await store.load_thread(thread_id, context)
    fresh = await store.load_thread(thread_id, context)
    fresh.title = "fresh"
    await store.save_thread(fresh, context)
    await store.save_thread(unchanged, context)  # nothing of its own to apply: no conflict
    assert (await store.load_thread(thread_id, context)).title == "fresh"
    fresh.title = "fresher"  # the unchanged save did not bump the version: no conflict either
    await store.save_thread(fresh, context)
    assert (await store.load_thread(thread_id, context)).title == "fresher"


async def test_an_unchanged_thread_deleted_meanwhile_stays_deleted(
    open_store: Opener, context: dict[str, str]
) -> None:
    store = open_store("merge")
    thread_id = await _new_thread(store, context)
    loaded = await store.load_thread(thread_id, context)
    await store.delete_thread(thread_id, context)
    await store.save_thread(loaded, context)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread_id, context)


def test_merge_applies_our_changes_to_theirs_metadata_key_by_key() -> None:
    base = {"title": "a", "status": "x", "metadata": {"k": 1, "gone": 0}}
    ours = {"title": "a", "status": "y", "metadata": {"k": 2, "new": 3}}
    theirs = {"title": "b", "status": "x", "metadata": {"k": 1, "gone": 0, "theirs": 4}}
    assert merge(ours, base, theirs) == {
        "title": "b",
        "status": "y",
        "metadata": {"k": 2, "new": 3, "theirs": 4},
    }


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="merge, raise or overwrite"):
        MemoryStore(thread_conflicts="ignore")  # type: ignore[arg-type]


async def test_a_delete_wins_over_saves_of_a_new_thread_object(
    open_store: Opener, context: dict[str, str]
) -> None:
    """ChatKit keeps the thread it created for threads.create and saves it during the response."""
    store = open_store("merge")
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc))
    await store.save_thread(thread, context)
    await store.delete_thread(thread.id, context)
    thread.title = "named by the response"
    await store.save_thread(thread, context)
    with pytest.raises(NotFoundError):
        await store.load_thread(thread.id, context)


async def test_a_new_thread_object_saved_again_keeps_a_rename_made_meanwhile(
    open_store: Opener, context: dict[str, str]
) -> None:
    response, other = open_store("merge"), open_store("merge")
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc))
    await response.save_thread(thread, context)
    renamed = await other.load_thread(thread.id, context)
    renamed.title = "renamed"
    await other.save_thread(renamed, context)
    thread.metadata = {"step": 1}
    await response.save_thread(thread, context)
    thread.metadata = {"step": 2}
    await response.save_thread(thread, context)
    final = await other.load_thread(thread.id, context)
    assert (final.title, final.metadata) == ("renamed", {"step": 2})


async def test_one_thread_object_saved_in_two_tenants_is_stored_in_both(
    open_store: Opener, context: dict[str, str]
) -> None:
    """What a store remembers of an object holds in the tenant it was saved or loaded in."""
    store = open_store("merge")
    other = {"user_id": f"u_{uuid.uuid4().hex}"}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc))
    await store.save_thread(thread, context)
    await store.save_thread(thread, other)  # unchanged, but never saved in this tenant
    assert (await store.load_thread(thread.id, other)).id == thread.id
    loaded = await store.load_thread(thread.id, context)
    await store.delete_thread(thread.id, other)
    await store.save_thread(loaded, other)  # loaded in the first tenant: saved whole here
    assert (await store.load_thread(thread.id, other)).id == thread.id
