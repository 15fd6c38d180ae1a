"""The store conformance tests: what ChatKit relies on a ``Store`` to do.

Subclass :class:`StoreTests` and override the async ``store`` fixture (and, if your contexts
are not dicts with ``user_id``, the ``context`` and ``other_context`` fixtures). Every test uses
fresh random ids, so a shared database needs no cleaning between tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import LockedStatus, Page, Thread, ThreadMetadata

from . import models
from .capabilities import requires
from .fixtures import Ctx, Reopen, StoreFixtures, add_items, collect
from .models import T0, new_id


class ThreadTests(StoreFixtures):
    """Threads: round trips, upserts, missing threads."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("stamp", list(models.TIMESTAMPS))
    async def test_thread_round_trip(self, store: Store[Any], context: Ctx, stamp: str) -> None:
        """A thread with status, metadata and odd text loads back equal, timezone included."""
        thread = models.thread(created_at=models.TIMESTAMPS[stamp], title=models.NASTY_TEXT)
        thread.status = LockedStatus(reason="read only")
        if "allowed_image_domains" in ThreadMetadata.model_fields:  # openai-chatkit >= 1.6.x
            thread.allowed_image_domains = ["images.example.com"]
        await store.save_thread(thread, context)
        loaded = await store.load_thread(thread.id, context)
        assert loaded == thread, "load_thread must return exactly what save_thread stored"
        assert loaded.created_at.tzinfo == thread.created_at.tzinfo, "timezone must survive"
        page = await store.load_threads(10, None, "asc", context)
        assert page.data == [thread], "load_threads must return threads exactly as saved"

    @pytest.mark.asyncio
    async def test_thread_without_title(self, store: Store[Any], context: Ctx) -> None:
        """A thread with a None title loads back with a None title."""
        thread = models.thread(title=None)
        await store.save_thread(thread, context)
        assert (await store.load_thread(thread.id, context)).title is None

    @pytest.mark.asyncio
    async def test_save_thread_updates(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Saving a thread again replaces it (upsert)."""
        saved_thread.title = "renamed"
        saved_thread.metadata = {"v": 2}
        await store.save_thread(saved_thread, context)
        assert await store.load_thread(saved_thread.id, context) == saved_thread, (
            "save_thread must upsert: ChatKit saves the same thread again after a rename"
        )

    @pytest.mark.asyncio
    async def test_full_thread_saved_as_metadata(self, store: Store[Any], context: Ctx) -> None:
        """Saving a full Thread (as ChatKit does while streaming) stores its metadata only."""
        metadata = models.thread()
        item = models.end_of_turn(metadata.id)
        full = Thread(**metadata.model_dump(), items=Page(data=[item]))
        await store.save_thread(full, context)
        loaded = await store.load_thread(metadata.id, context)
        assert loaded == metadata and type(loaded) is ThreadMetadata, (
            "ChatKit saves a full Thread while streaming; load_thread must return its metadata only"
        )

    @pytest.mark.asyncio
    async def test_load_missing_thread(self, store: Store[Any], context: Ctx) -> None:
        """Loading a missing thread raises NotFoundError."""
        with pytest.raises(NotFoundError):
            await store.load_thread(new_id("thr"), context)

    @pytest.mark.asyncio
    async def test_delete_missing_thread_is_noop(self, store: Store[Any], context: Ctx) -> None:
        """Deleting a missing thread is a no-op."""
        await store.delete_thread(new_id("thr"), context)

    @pytest.mark.asyncio
    async def test_loaded_model_is_not_aliased(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Changing a loaded model does not change what is stored."""
        loaded = await store.load_thread(saved_thread.id, context)
        loaded.title = "changed after load"
        assert (await store.load_thread(saved_thread.id, context)).title == "A thread", (
            "load_thread must return a copy, not the stored object"
        )

    @pytest.mark.asyncio
    async def test_saved_model_is_not_aliased(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Changing a model after saving it does not change what is stored."""
        saved_thread.title = "changed after save"
        assert (await store.load_thread(saved_thread.id, context)).title == "A thread", (
            "a store must keep a copy, not a reference to the caller's model"
        )


class ItemTests(StoreFixtures):
    """Items: every type round-trips, upserts keep their place, missing items."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("kind", list(models.ITEM_BUILDERS))
    async def test_item_round_trip(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx, kind: str
    ) -> None:
        """Every ThreadItem type loads back equal, alone and through a page."""
        item = models.ITEM_BUILDERS[kind](saved_thread.id, models.TIMESTAMPS["offset"])
        await store.add_thread_item(saved_thread.id, item, context)
        assert await store.load_item(saved_thread.id, item.id, context) == item, (
            f"a {kind} item must load back equal to what was added"
        )
        page = await store.load_thread_items(saved_thread.id, None, 10, "asc", context)
        assert page.data == [item]

    @pytest.mark.asyncio
    @pytest.mark.parametrize("stamp", list(models.TIMESTAMPS))
    async def test_item_timestamps(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx, stamp: str
    ) -> None:
        """Naive and aware item timestamps load back with microseconds and timezone."""
        item = models.end_of_turn(saved_thread.id, models.TIMESTAMPS[stamp])
        await store.add_thread_item(saved_thread.id, item, context)
        loaded = await store.load_item(saved_thread.id, item.id, context)
        assert loaded.created_at == item.created_at, "timestamps round-trip exactly, with timezone"
        assert loaded.created_at.tzinfo == item.created_at.tzinfo, "timezone must survive"

    @pytest.mark.asyncio
    @requires("nul_in_text")
    async def test_nul_in_text(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Text with U+0000 round-trips in items and thread titles."""
        item = models.assistant_message(saved_thread.id, text="before\x00after")
        await store.add_thread_item(saved_thread.id, item, context)
        assert await store.load_item(saved_thread.id, item.id, context) == item, (
            "text with a NUL character must round-trip exactly"
        )
        thread = models.thread(title="nul \x00 title")
        await store.save_thread(thread, context)
        assert await store.load_thread(thread.id, context) == thread

    @pytest.mark.asyncio
    @requires("large_items")
    async def test_large_item(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An item of about 5 MB of text round-trips exactly."""
        big = models.NASTY_TEXT + "🙂" * 500_000 + "x" * 3_000_000
        item = models.assistant_message(saved_thread.id, text=big)
        await store.add_thread_item(saved_thread.id, item, context)
        assert await store.load_item(saved_thread.id, item.id, context) == item, (
            "an item of several megabytes must round-trip exactly"
        )

    @pytest.mark.asyncio
    async def test_add_is_idempotent(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Adding the same item twice (a retry) does not duplicate it."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        await store.add_thread_item(saved_thread.id, items[0], context)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [i.id for i in items], (
            "adding the same item twice (a retry) must not duplicate it"
        )

    @pytest.mark.asyncio
    async def test_save_item_keeps_position(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Updating an item replaces it and keeps its place in the thread."""
        items = await add_items(store, saved_thread, 3, context, step=None)
        updated = items[0].model_copy(update={"content": []})
        await store.save_item(saved_thread.id, updated, context)
        page = await store.load_thread_items(saved_thread.id, None, 10, "asc", context)
        assert [i.id for i in page.data] == [i.id for i in items], (
            "an updated item must keep its place"
        )
        assert page.data[0] == updated, "save_item must replace the stored item"

    @pytest.mark.asyncio
    async def test_save_item_inserts_unknown(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """save_item of an item never added inserts it (upsert)."""
        item = models.client_tool_call(saved_thread.id)
        await store.save_item(saved_thread.id, item, context)
        assert await store.load_item(saved_thread.id, item.id, context) == item, (
            "save_item must upsert: ChatKit may save an item it never added"
        )

    @pytest.mark.asyncio
    async def test_missing_items(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Missing items raise NotFoundError; deleting one is a no-op; unknown threads are empty."""
        with pytest.raises(NotFoundError):
            await store.load_item(saved_thread.id, new_id("msg"), context)
        await store.delete_thread_item(saved_thread.id, new_id("msg"), context)
        page = await store.load_thread_items(new_id("thr"), None, 10, "desc", context)
        assert page.data == [] and not page.has_more, "an unknown thread has an empty page"

    @pytest.mark.asyncio
    async def test_delete_item(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Deleting an item removes it and only it."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        await store.delete_thread_item(saved_thread.id, items[1].id, context)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [items[0].id, items[2].id]
        with pytest.raises(NotFoundError):
            await store.load_item(saved_thread.id, items[1].id, context)

    @pytest.mark.asyncio
    async def test_item_is_scoped_to_its_thread(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An item is found only through its own thread."""
        item = models.end_of_turn(saved_thread.id)
        await store.add_thread_item(saved_thread.id, item, context)
        with pytest.raises(NotFoundError):
            await store.load_item(new_id("thr"), item.id, context)

    @pytest.mark.asyncio
    async def test_hostile_ids(self, store: Store[Any], context: Ctx) -> None:
        """Hostile ids (quotes, %, _, case, padding, unicode, 255 chars) match only themselves."""
        for thread_id in models.HOSTILE_IDS:
            thread = models.thread(thread_id, title=thread_id)
            await store.save_thread(thread, context)
            await store.add_thread_item(thread_id, models.end_of_turn(thread_id), context)
        for thread_id in models.HOSTILE_IDS:
            assert (await store.load_thread(thread_id, context)).title == thread_id, (
                f"id {thread_id!r} must match only itself (no LIKE, case folding or padding)"
            )
            page = await store.load_thread_items(thread_id, None, 10, "asc", context)
            assert len(page.data) == 1, f"thread {thread_id!r} must see only its own item"
        with pytest.raises(NotFoundError):
            await store.load_thread("%", context)


class OrderingTests(StoreFixtures):
    """Threads and items order by created_at, ties by insertion; pagination laws."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
    async def test_items_paginate(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx, order: str, limit: int
    ) -> None:
        """Item pages follow (created_at, insertion) order and the pagination laws."""
        # Shuffled timestamps with ties: order is (created_at, insertion).
        offsets = [3, 1, 1, 2, 0, 3, 1, 2, 2, 0, 5, 4, 4, 1, 3]
        added = []
        for i, off in enumerate(offsets):
            item = models.assistant_message(saved_thread.id, T0 + timedelta(seconds=off), f"i{i}")
            await store.add_thread_item(saved_thread.id, item, context)
            added.append((off, i, item.id))
        expected = [item_id for _, _, item_id in sorted(added)]
        if order == "desc":
            expected.reverse()
        ids, pages = await collect(store, saved_thread.id, order, limit, context)
        assert sorted(ids) == sorted(expected), "pagination lost or repeated items (has_more/after)"
        assert ids == expected, (
            f"items must come in created_at order, ties in insertion order ({order})"
        )
        _check_pages(pages, limit)

    @pytest.mark.asyncio
    @pytest.mark.parametrize("order", ["asc", "desc"])
    async def test_threads_paginate(self, store: Store[Any], context: Ctx, order: str) -> None:
        """Thread pages follow (created_at, insertion) order and the pagination laws."""
        offsets = [2, 0, 1, 1, 3, 0]
        expected_rows = []
        for i, off in enumerate(offsets):
            thread = models.thread(created_at=T0 + timedelta(minutes=off))
            await store.save_thread(thread, context)
            expected_rows.append((off, i, thread.id))
        expected = [t for _, _, t in sorted(expected_rows)]
        if order == "desc":
            expected.reverse()
        for limit in (1, 4, 6, 100):
            ids, pages = await collect(store, None, order, limit, context)
            assert ids == expected, (
                f"threads must come in created_at order ({order}, limit {limit})"
            )
            _check_pages(pages, limit)

    @pytest.mark.asyncio
    async def test_aware_and_naive_order_together(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Aware timestamps order by their UTC instant."""
        plus_one = models.TIMESTAMPS["utc"] + timedelta(seconds=1)
        later = models.end_of_turn(
            saved_thread.id, plus_one.astimezone(models.TIMESTAMPS["offset"].tzinfo)
        )
        earlier = models.end_of_turn(saved_thread.id, T0)
        await store.add_thread_item(saved_thread.id, later, context)
        await store.add_thread_item(saved_thread.id, earlier, context)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [earlier.id, later.id], "aware timestamps order by their UTC instant"

    @pytest.mark.asyncio
    async def test_save_thread_keeps_position(self, store: Store[Any], context: Ctx) -> None:
        """Saving a thread again does not move it in the list."""
        threads = [models.thread(created_at=T0) for _ in range(3)]
        for thread in threads:
            await store.save_thread(thread, context)
        threads[0].title = "renamed"
        await store.save_thread(threads[0], context)
        ids, _ = await collect(store, None, "asc", 10, context)
        assert ids == [t.id for t in threads], "saving a thread again must not move it"

    @pytest.mark.asyncio
    async def test_unknown_cursor(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An after cursor naming nothing raises NotFoundError instead of restarting."""
        await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        for order in ("asc", "desc"):
            with pytest.raises(NotFoundError):
                await store.load_thread_items(saved_thread.id, new_id("msg"), 10, order, context)
            with pytest.raises(NotFoundError):
                await store.load_threads(10, new_id("thr"), order, context)
        other = models.thread()
        await store.save_thread(other, context)
        [foreign] = await add_items(store, other, 1, context, step=None)
        for order in ("asc", "desc"):
            with pytest.raises(NotFoundError):  # a cursor is only an item of this thread
                await store.load_thread_items(saved_thread.id, foreign.id, 10, order, context)

    @pytest.mark.asyncio
    async def test_cursor_on_last_item(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """A cursor on the last item gives an empty final page."""
        items = await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        page = await store.load_thread_items(saved_thread.id, items[-1].id, 10, "asc", context)
        assert page.data == [] and not page.has_more and page.after is None

    @pytest.mark.asyncio
    async def test_bad_arguments(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An order other than asc/desc, or a limit below 1, raises ValueError."""
        for order in ("ASC", "random", "created_at; DROP TABLE x", ""):
            with pytest.raises(ValueError):
                await store.load_thread_items(saved_thread.id, None, 10, order, context)
            with pytest.raises(ValueError):
                await store.load_threads(10, None, order, context)
        for limit in (0, -1):
            with pytest.raises(ValueError):
                await store.load_thread_items(saved_thread.id, None, limit, "asc", context)
            with pytest.raises(ValueError):
                await store.load_threads(limit, None, "asc", context)

    @pytest.mark.asyncio
    async def test_huge_limit(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """A huge limit (a client can send one) is served, not an error."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        page = await store.load_thread_items(saved_thread.id, None, 10**9, "asc", context)
        assert [i.id for i in page.data] == [i.id for i in items] and not page.has_more


def _check_pages(pages: list[Page[Any]], limit: int) -> None:
    for page in pages[:-1]:
        assert len(page.data) == limit and page.has_more, (
            "a page before the last is full with has_more"
        )
        assert page.after == page.data[-1].id, "after must be the last id of a page with has_more"
    for page in pages[1:]:
        assert page.data, "has_more=True promised more, but the next page is empty"
    last = pages[-1]
    assert not last.has_more and last.after is None, "the last page has has_more=False, after=None"
    assert len(last.data) <= limit


class AttachmentMetadataTests(StoreFixtures):
    """Attachment metadata: round trips, upserts, missing attachments."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize("kind", list(models.ATTACHMENT_BUILDERS))
    async def test_attachment_round_trip(self, store: Store[Any], context: Ctx, kind: str) -> None:
        """File and image attachment metadata load back equal."""
        attachment = models.ATTACHMENT_BUILDERS[kind]()
        await store.save_attachment(attachment, context)
        assert await store.load_attachment(attachment.id, context) == attachment

    @pytest.mark.asyncio
    async def test_save_attachment_upserts(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Saving an attachment again replaces it (ChatKit sets thread_id that way)."""
        attachment = models.file_attachment()
        await store.save_attachment(attachment, context)
        attached = attachment.model_copy(update={"thread_id": saved_thread.id})
        await store.save_attachment(attached, context)
        assert await store.load_attachment(attachment.id, context) == attached, (
            "ChatKit re-saves an attachment to set its thread_id"
        )

    @pytest.mark.asyncio
    async def test_missing_attachment(self, store: Store[Any], context: Ctx) -> None:
        """A missing attachment raises NotFoundError on load; deleting it is a no-op."""
        with pytest.raises(NotFoundError):
            await store.load_attachment(new_id("atc"), context)
        await store.delete_attachment(new_id("atc"), context)

    @pytest.mark.asyncio
    async def test_delete_attachment(self, store: Store[Any], context: Ctx) -> None:
        """Deleting attachment metadata removes it."""
        attachment = models.image_attachment()
        await store.save_attachment(attachment, context)
        await store.delete_attachment(attachment.id, context)
        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment.id, context)


class DeleteThreadTests(StoreFixtures):
    """delete_thread removes the thread, its items and its attachments' metadata, nothing else."""

    @pytest.mark.asyncio
    async def test_delete_cascades(self, store: Store[Any], context: Ctx) -> None:
        """delete_thread removes the thread, its items and its attachments, nothing else."""
        doomed, kept = models.thread(), models.thread()
        for thread in (doomed, kept):
            await store.save_thread(thread, context)
            await add_items(store, thread, 3, context, step=timedelta(seconds=1))
        gone = models.file_attachment(thread_id=doomed.id)
        stays = models.file_attachment(thread_id=kept.id)
        loose = models.file_attachment()
        for attachment in (gone, stays, loose):
            await store.save_attachment(attachment, context)

        await store.delete_thread(doomed.id, context)

        with pytest.raises(NotFoundError):
            await store.load_thread(doomed.id, context)
        page = await store.load_thread_items(doomed.id, None, 10, "asc", context)
        assert page.data == [], "delete_thread must delete the thread's items"
        with pytest.raises(NotFoundError):
            await store.load_attachment(gone.id, context)
        assert await store.load_thread(kept.id, context) == kept
        assert len((await store.load_thread_items(kept.id, None, 10, "asc", context)).data) == 3
        await store.load_attachment(stays.id, context)
        await store.load_attachment(loose.id, context)


@requires("tenant_isolation")
class TenantIsolationTests(StoreFixtures):
    """Another tenant's object is indistinguishable from a missing one."""

    @pytest.mark.asyncio
    async def test_same_ids_are_separate_objects(
        self, store: Store[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """The same ids in two tenants are two unrelated objects."""
        thread_id = new_id("thr")
        mine, theirs = (
            models.thread(thread_id, title="mine"),
            models.thread(thread_id, title="theirs"),
        )
        await store.save_thread(mine, context)
        await store.save_thread(theirs, other_context)
        item = models.end_of_turn(thread_id)
        await store.add_thread_item(thread_id, item, context)
        their_item = item.model_copy(update={"created_at": T0 + timedelta(days=1)})
        await store.add_thread_item(thread_id, their_item, other_context)
        attachment = models.file_attachment()
        await store.save_attachment(attachment, context)
        await store.save_attachment(attachment.model_copy(update={"name": "theirs"}), other_context)

        assert (await store.load_thread(thread_id, context)).title == "mine"
        assert (await store.load_thread(thread_id, other_context)).title == "theirs"
        assert await store.load_item(thread_id, item.id, context) == item
        assert await store.load_item(thread_id, item.id, other_context) == their_item
        assert (await store.load_attachment(attachment.id, context)).name == attachment.name

        await store.delete_thread(thread_id, other_context)
        await store.delete_attachment(attachment.id, other_context)
        assert (await store.load_thread(thread_id, context)).title == "mine", (
            "deleting a thread in one tenant must not touch the same id in another"
        )
        assert await store.load_item(thread_id, item.id, context) == item
        assert await store.load_attachment(attachment.id, context) == attachment

    @pytest.mark.asyncio
    async def test_other_tenant_sees_nothing(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx, other_context: Ctx
    ) -> None:
        """Another tenant's objects look missing and cannot be changed."""
        items = await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        attachment = models.image_attachment(thread_id=saved_thread.id)
        await store.save_attachment(attachment, context)

        with pytest.raises(NotFoundError):
            await store.load_thread(saved_thread.id, other_context)
        with pytest.raises(NotFoundError):
            await store.load_item(saved_thread.id, items[0].id, other_context)
        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment.id, other_context)
        page = await store.load_thread_items(saved_thread.id, None, 10, "asc", other_context)
        assert page.data == [], "another tenant's thread must look empty"
        with pytest.raises(NotFoundError):
            await store.load_thread_items(saved_thread.id, items[0].id, 10, "asc", other_context)
        with pytest.raises(NotFoundError):
            await store.load_threads(10, saved_thread.id, "asc", other_context)
        ids, _ = await collect(store, None, "asc", 10, other_context)
        assert saved_thread.id not in ids

        await store.delete_thread_item(saved_thread.id, items[0].id, other_context)
        await store.delete_attachment(attachment.id, other_context)
        await store.delete_thread(saved_thread.id, other_context)
        assert await store.load_thread(saved_thread.id, context) == saved_thread
        assert (
            await store.load_thread_items(saved_thread.id, None, 10, "asc", context)
        ).data == items
        assert await store.load_attachment(attachment.id, context) == attachment


@requires("concurrent_writes")
class ConcurrencyTests(StoreFixtures):
    """Concurrent writers on one thread never lose a write."""

    @pytest.mark.asyncio
    async def test_concurrent_adds(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """50 concurrent add_thread_item calls on one thread all persist, in order."""
        items = [
            models.end_of_turn(saved_thread.id, T0 + timedelta(microseconds=i)) for i in range(50)
        ]
        await asyncio.gather(*(store.add_thread_item(saved_thread.id, i, context) for i in items))
        ids, _ = await collect(store, saved_thread.id, "asc", 20, context)
        assert ids == [i.id for i in items], "all 50 concurrent add_thread_item calls must persist"

    @pytest.mark.asyncio
    async def test_concurrent_mixed_writes(self, store: Store[Any], context: Ctx) -> None:
        """Concurrent turns on different threads lose no write."""
        threads = [models.thread() for _ in range(10)]

        async def turn(thread: ThreadMetadata) -> None:
            await store.save_thread(thread, context)
            await add_items(store, thread, 3, context, step=timedelta(seconds=1))
            thread.title = "done"
            await store.save_thread(thread, context)

        await asyncio.gather(*(turn(t) for t in threads))
        for thread in threads:
            assert (await store.load_thread(thread.id, context)).title == "done"
            assert (
                len((await store.load_thread_items(thread.id, None, 10, "asc", context)).data) == 3
            )


class IdTests(StoreFixtures):
    """Generated ids keep ChatKit's prefixes and do not collide."""

    @pytest.mark.asyncio
    async def test_generated_ids(self, store: Store[Any], context: Ctx) -> None:
        """Generated ids keep ChatKit's prefixes and do not collide."""
        thread = models.thread()
        thread_ids = {store.generate_thread_id(context) for _ in range(20_000)}
        assert len(thread_ids) == 20_000, "generated thread ids must not collide"
        assert all(t.startswith("thr_") for t in thread_ids)
        for kind, prefix in [
            ("message", "msg_"),
            ("tool_call", "tc_"),
            ("task", "tsk_"),
            ("workflow", "wf_"),
        ]:
            assert store.generate_item_id(kind, thread, context).startswith(prefix)  # type: ignore[arg-type]


@requires("durability")
class DurabilityTests(StoreFixtures):
    """What was written is there after the store is closed and opened again."""

    @pytest.mark.asyncio
    async def test_survives_reopen(
        self, store: Store[Any], context: Ctx, reopen: Reopen | None
    ) -> None:
        """Threads, items and attachments written before a reopen load back equal after it."""
        if reopen is None:
            pytest.skip("override the `reopen` fixture to run the durability tests")
        thread = models.thread()
        await store.save_thread(thread, context)
        items = [builder(thread.id, T0) for builder in models.ITEM_BUILDERS.values()]
        for item in items:
            await store.add_thread_item(thread.id, item, context)
        attachment = models.image_attachment(thread_id=thread.id)
        await store.save_attachment(attachment, context)

        reopened = await reopen(store)
        assert await reopened.load_thread(thread.id, context) == thread
        page = await reopened.load_thread_items(thread.id, None, 100, "asc", context)
        assert page.data == items, "items must survive a reopen, in order"
        assert await reopened.load_attachment(attachment.id, context) == attachment
