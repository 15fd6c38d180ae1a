"""The store conformance tests: what ChatKit relies on a ``Store`` to do.

Subclass :class:`StoreTests` and override the async ``store`` fixture (and, if your contexts
are not dicts with ``user_id``, the ``context`` and ``other_context`` fixtures). Every test uses
fresh random ids, so a shared database needs no cleaning between tests.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta, timezone
from typing import Any

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import LockedStatus, Page, Thread, ThreadMetadata

from . import models
from .capabilities import Capabilities, requires
from .fixtures import (
    Ctx,
    Reopen,
    StoreFixtures,
    add_items,
    async_tests,
    collect,
    expect_error,
    expect_ok,
)
from .models import T0, new_id

MISSING = "ChatKit's server turns NotFoundError into a 'not found' answer; raise it for"


@async_tests
class ThreadTests(StoreFixtures):
    """Threads: round trips, upserts, missing threads."""

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

    async def test_thread_without_title(self, store: Store[Any], context: Ctx) -> None:
        """A thread with a None title loads back with a None title."""
        thread = models.thread(title=None)
        await store.save_thread(thread, context)
        assert (await store.load_thread(thread.id, context)).title is None

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

    async def test_load_missing_thread(self, store: Store[Any], context: Ctx) -> None:
        """Loading a missing thread raises NotFoundError."""
        await expect_error(
            store.load_thread(new_id("thr"), context),
            NotFoundError,
            f"load_thread of a missing thread: {MISSING} a missing thread",
        )

    async def test_delete_missing_thread_is_noop(self, store: Store[Any], context: Ctx) -> None:
        """Deleting a missing thread is a no-op."""
        await expect_ok(
            store.delete_thread(new_id("thr"), context),
            "delete_thread of a missing thread must be a no-op (a retried delete is normal)",
        )

    async def test_loaded_model_is_not_aliased(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Changing a loaded model does not change what is stored."""
        loaded = await store.load_thread(saved_thread.id, context)
        loaded.title = "changed after load"
        assert (await store.load_thread(saved_thread.id, context)).title == "A thread", (
            "load_thread must return a copy, not the stored object"
        )

    async def test_saved_model_is_not_aliased(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Changing a model after saving it does not change what is stored."""
        saved_thread.title = "changed after save"
        assert (await store.load_thread(saved_thread.id, context)).title == "A thread", (
            "a store must keep a copy, not a reference to the caller's model"
        )


@async_tests
class ItemTests(StoreFixtures):
    """Items: every type round-trips, upserts keep their place, missing items."""

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

    @requires("insert_if_absent_adds")
    async def test_add_is_idempotent(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Adding the same item twice (a retry) does not duplicate it."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        retry = "adding the same item twice (a retry) must not duplicate it: insert if absent"
        await expect_ok(store.add_thread_item(saved_thread.id, items[0], context), retry)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [i.id for i in items], retry

    async def test_save_item_keeps_position(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Updating an item replaces it and keeps its place in the thread."""
        items = await add_items(store, saved_thread, 3, context, step=None)
        updated = items[0].model_copy(update={"content": []})
        await store.save_item(saved_thread.id, updated, context)
        page = await store.load_thread_items(saved_thread.id, None, 10, "asc", context)
        assert [i.id for i in page.data] == [i.id for i in items], (
            "an updated item must keep its place (ChatKit updates items in place while "
            "streaming): update the row and keep its insertion sequence, not DELETE + INSERT"
        )
        assert page.data[0] == updated, "save_item must replace the stored item"

    async def test_save_item_inserts_unknown(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """save_item of an item never added inserts it (upsert)."""
        item = models.client_tool_call(saved_thread.id)
        upsert = "save_item must upsert: ChatKit may save an item it never added"
        await expect_ok(store.save_item(saved_thread.id, item, context), upsert)
        loaded = await expect_ok(store.load_item(saved_thread.id, item.id, context), upsert)
        assert loaded == item, upsert

    async def test_missing_items(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Missing items raise NotFoundError; deleting one is a no-op; unknown threads are empty."""
        await expect_error(
            store.load_item(saved_thread.id, new_id("msg"), context),
            NotFoundError,
            f"load_item of a missing item: {MISSING} a missing item",
        )
        await expect_ok(
            store.delete_thread_item(saved_thread.id, new_id("msg"), context),
            "delete_thread_item of a missing item must be a no-op",
        )
        page = await store.load_thread_items(new_id("thr"), None, 10, "desc", context)
        assert page.data == [] and not page.has_more, "an unknown thread has an empty page"

    async def test_delete_item(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Deleting an item removes it and only it."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        await store.delete_thread_item(saved_thread.id, items[1].id, context)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [items[0].id, items[2].id]
        await expect_error(
            store.load_item(saved_thread.id, items[1].id, context),
            NotFoundError,
            "delete_thread_item must delete the item: it still loads",
        )

    async def test_item_is_scoped_to_its_thread(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An item is found only through its own thread."""
        item = models.end_of_turn(saved_thread.id)
        await store.add_thread_item(saved_thread.id, item, context)
        await expect_error(
            store.load_item(new_id("thr"), item.id, context),
            NotFoundError,
            "load_item must find an item only through its own thread: filter by thread id too",
        )

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
        await expect_error(
            store.load_thread("%", context),
            NotFoundError,
            "the id '%' must match only itself: compare ids with =, never LIKE",
        )


@async_tests
class OrderingTests(StoreFixtures):
    """Threads and items order by created_at, ties by insertion; pagination laws."""

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
        assert sorted(ids) == sorted(expected), (
            f"pagination lost or repeated items ({order}, limit {limit}): page by "
            "(created_at, an insertion sequence) so that equal timestamps keep their order "
            "across pages, and set has_more/after from a limit + 1 read"
        )
        assert ids == expected, (
            f"items must come in created_at order, ties in insertion order ({order}): "
            "order by (created_at, an insertion sequence), reversed for desc"
        )
        _check_pages(pages, limit)

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
                f"threads must come in created_at order, ties in insertion order ({order}, "
                f"limit {limit}): page by (created_at, an insertion sequence)"
            )
            _check_pages(pages, limit)

    async def test_aware_timestamps_order_by_instant(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """Aware timestamps in different zones order by their instant, not their wall clock."""
        utc = models.TIMESTAMPS["utc"]
        stamps = [
            (utc + timedelta(seconds=2)).astimezone(timezone(timedelta(hours=-8))),
            utc.astimezone(timezone(timedelta(hours=5, minutes=30))),
            utc + timedelta(seconds=1),
        ]
        items = [models.end_of_turn(saved_thread.id, at) for at in stamps]
        for item in items:
            await store.add_thread_item(saved_thread.id, item, context)
        ids, _ = await collect(store, saved_thread.id, "asc", 10, context)
        assert ids == [items[1].id, items[2].id, items[0].id], (
            "aware timestamps must order by their instant: compare them in UTC, "
            "not as text or wall-clock time"
        )

    @requires("naive_is_utc")
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
        assert ids == [earlier.id, later.id], (
            "a naive created_at must order as UTC next to aware ones (policy naive_is_utc)"
        )

    @requires("thread_resave_keeps_position")
    async def test_save_thread_keeps_position(self, store: Store[Any], context: Ctx) -> None:
        """Saving a thread again does not move it in the list."""
        threads = [models.thread(created_at=T0) for _ in range(3)]
        for thread in threads:
            await store.save_thread(thread, context)
        threads[0].title = "renamed"
        await store.save_thread(threads[0], context)
        ids, _ = await collect(store, None, "asc", 10, context)
        assert ids == [t.id for t in threads], (
            "saving a thread again must not move it among threads of the same created_at: "
            "update the row and keep its insertion sequence, not DELETE + INSERT"
        )

    async def test_unknown_cursor(
        self,
        store: Store[Any],
        saved_thread: ThreadMetadata,
        context: Ctx,
        capabilities: Capabilities,
    ) -> None:
        """An after cursor naming nothing raises (NotFoundError by policy), never restarts."""
        await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        other = models.thread()
        await store.save_thread(other, context)
        [foreign] = await add_items(store, other, 1, context, step=None)
        for order in ("asc", "desc"):
            for what, after in [
                ("an unknown item", new_id("msg")),
                ("another thread's item", foreign.id),
            ]:
                page = store.load_thread_items(saved_thread.id, after, 10, order, context)
                await expect_cursor_error(page, capabilities, f"{what} ({order})")
            threads = store.load_threads(10, new_id("thr"), order, context)
            await expect_cursor_error(threads, capabilities, f"an unknown thread ({order})")

    async def test_cursor_on_last_item(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """A cursor on the last item gives an empty final page."""
        items = await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        page = await store.load_thread_items(saved_thread.id, items[-1].id, 10, "asc", context)
        assert page.data == [] and not page.has_more and page.after is None

    @requires("argument_errors")
    async def test_bad_arguments(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """An order other than asc/desc, or a limit below 1, raises ValueError."""
        for order in ("ASC", "random", "created_at; DROP TABLE x", ""):
            why = (
                f"order={order!r} must raise ValueError: accept only 'asc' and 'desc', "
                "and never build SQL from its text"
            )
            await expect_error(
                store.load_thread_items(saved_thread.id, None, 10, order, context), ValueError, why
            )
            await expect_error(store.load_threads(10, None, order, context), ValueError, why)
        for limit in (0, -1):
            why = f"limit={limit} must raise ValueError (a page holds at least one object)"
            await expect_error(
                store.load_thread_items(saved_thread.id, None, limit, "asc", context),
                ValueError,
                why,
            )
            await expect_error(store.load_threads(limit, None, "asc", context), ValueError, why)

    async def test_huge_limit(
        self, store: Store[Any], saved_thread: ThreadMetadata, context: Ctx
    ) -> None:
        """A huge limit (a client can send one) is served, not an error."""
        items = await add_items(store, saved_thread, 3, context, step=timedelta(seconds=1))
        huge = "ChatKit passes the client's limit through uncapped: clamp a huge limit, never raise"
        page = await expect_ok(
            store.load_thread_items(saved_thread.id, None, 10**9, "asc", context), huge
        )
        assert [i.id for i in page.data] == [i.id for i in items] and not page.has_more, huge


async def expect_cursor_error(call: Any, capabilities: Capabilities, what: str) -> None:
    """An unknown cursor must raise; NotFoundError unless that policy is off."""
    restart = (
        f"an after cursor naming {what} must raise, never restart from the first page "
        "(ChatKit's reverse pagination would loop forever): look the cursor up first"
    )
    raised = await expect_error(call, Exception, restart)
    if capabilities.unknown_cursor_not_found:
        assert isinstance(raised, NotFoundError), (
            f"an after cursor naming {what} must raise NotFoundError, not "
            f"{type(raised).__name__} (policy unknown_cursor_not_found)"
        )


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


@async_tests
class AttachmentMetadataTests(StoreFixtures):
    """Attachment metadata: round trips, upserts, missing attachments."""

    @pytest.mark.parametrize("kind", list(models.ATTACHMENT_BUILDERS))
    async def test_attachment_round_trip(self, store: Store[Any], context: Ctx, kind: str) -> None:
        """File and image attachment metadata load back equal."""
        attachment = models.ATTACHMENT_BUILDERS[kind]()
        await store.save_attachment(attachment, context)
        assert await store.load_attachment(attachment.id, context) == attachment

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

    async def test_missing_attachment(self, store: Store[Any], context: Ctx) -> None:
        """A missing attachment raises NotFoundError on load; deleting it is a no-op."""
        await expect_error(
            store.load_attachment(new_id("atc"), context),
            NotFoundError,
            f"load_attachment of a missing attachment: {MISSING} a missing attachment",
        )
        await expect_ok(
            store.delete_attachment(new_id("atc"), context),
            "delete_attachment of a missing attachment must be a no-op",
        )

    async def test_delete_attachment(self, store: Store[Any], context: Ctx) -> None:
        """Deleting attachment metadata removes it."""
        attachment = models.image_attachment()
        await store.save_attachment(attachment, context)
        await store.delete_attachment(attachment.id, context)
        await expect_error(
            store.load_attachment(attachment.id, context),
            NotFoundError,
            "delete_attachment must delete the metadata: it still loads",
        )


@async_tests
class DeleteThreadTests(StoreFixtures):
    """delete_thread removes the thread and its items (and, by policy, its attachments)."""

    async def test_delete_cascades(self, store: Store[Any], context: Ctx) -> None:
        """delete_thread removes the thread and its items, nothing else."""
        doomed, kept = models.thread(), models.thread()
        for thread in (doomed, kept):
            await store.save_thread(thread, context)
            await add_items(store, thread, 3, context, step=timedelta(seconds=1))

        await store.delete_thread(doomed.id, context)

        await expect_error(
            store.load_thread(doomed.id, context),
            NotFoundError,
            "delete_thread must delete the thread: it still loads",
        )
        page = await store.load_thread_items(doomed.id, None, 10, "asc", context)
        assert page.data == [], "delete_thread must delete the thread's items too"
        assert await store.load_thread(kept.id, context) == kept, (
            "delete_thread must leave other threads alone"
        )
        kept_items = await store.load_thread_items(kept.id, None, 10, "asc", context)
        assert len(kept_items.data) == 3, "delete_thread must leave other threads' items alone"

    @requires("thread_delete_removes_attachments")
    async def test_delete_removes_attachments(self, store: Store[Any], context: Ctx) -> None:
        """delete_thread removes its attachments' metadata, not other threads' or loose ones."""
        doomed, kept = models.thread(), models.thread()
        for thread in (doomed, kept):
            await store.save_thread(thread, context)
        gone = models.file_attachment(thread_id=doomed.id)
        stays = models.file_attachment(thread_id=kept.id)
        loose = models.file_attachment()
        for attachment in (gone, stays, loose):
            await store.save_attachment(attachment, context)

        await store.delete_thread(doomed.id, context)

        await expect_error(
            store.load_attachment(gone.id, context),
            NotFoundError,
            "delete_thread must delete the metadata of the thread's attachments "
            "(policy thread_delete_removes_attachments)",
        )
        for attachment in (stays, loose):
            await expect_ok(
                store.load_attachment(attachment.id, context),
                "delete_thread must leave other threads' and loose attachments alone",
            )


@async_tests
class TenantIsolationTests(StoreFixtures):
    """Another tenant's object is indistinguishable from a missing one (a security rule)."""

    @requires("tenant_id_scopes")
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

        scoped = (
            "ids are scoped per tenant (policy tenant_id_scopes): key every row by tenant first"
        )
        assert (await store.load_thread(thread_id, context)).title == "mine", scoped
        assert (await store.load_thread(thread_id, other_context)).title == "theirs", scoped
        assert await store.load_item(thread_id, item.id, context) == item, scoped
        assert await store.load_item(thread_id, item.id, other_context) == their_item, scoped
        assert (await store.load_attachment(attachment.id, context)).name == attachment.name, scoped

        await store.delete_thread(thread_id, other_context)
        await store.delete_attachment(attachment.id, other_context)
        assert (await store.load_thread(thread_id, context)).title == "mine", (
            "deleting a thread in one tenant must not touch the same id in another"
        )
        assert await store.load_item(thread_id, item.id, context) == item, scoped
        assert await store.load_attachment(attachment.id, context) == attachment, scoped

    async def test_other_tenant_sees_nothing(
        self,
        store: Store[Any],
        saved_thread: ThreadMetadata,
        context: Ctx,
        other_context: Ctx,
        capabilities: Capabilities,
    ) -> None:
        """Another tenant's objects look missing and cannot be changed."""
        items = await add_items(store, saved_thread, 2, context, step=timedelta(seconds=1))
        attachment = models.image_attachment(thread_id=saved_thread.id)
        await store.save_attachment(attachment, context)

        leak = "another tenant's {} must look missing (NotFoundError): filter every query by tenant"
        await expect_error(
            store.load_thread(saved_thread.id, other_context), NotFoundError, leak.format("thread")
        )
        await expect_error(
            store.load_item(saved_thread.id, items[0].id, other_context),
            NotFoundError,
            leak.format("item"),
        )
        await expect_error(
            store.load_attachment(attachment.id, other_context),
            NotFoundError,
            leak.format("attachment") + " (else a user adopts another's file by sending its id)",
        )
        page = await store.load_thread_items(saved_thread.id, None, 10, "asc", other_context)
        assert page.data == [], "another tenant's thread must look empty: filter items by tenant"
        await expect_cursor_error(
            store.load_thread_items(saved_thread.id, items[0].id, 10, "asc", other_context),
            capabilities,
            "another tenant's item",
        )
        await expect_cursor_error(
            store.load_threads(10, saved_thread.id, "asc", other_context),
            capabilities,
            "another tenant's thread",
        )
        ids, _ = await collect(store, None, "asc", 10, other_context)
        assert saved_thread.id not in ids, "load_threads must list only the caller's threads"

        await store.delete_thread_item(saved_thread.id, items[0].id, other_context)
        await store.delete_attachment(attachment.id, other_context)
        await store.delete_thread(saved_thread.id, other_context)
        untouched = "another tenant's delete must have no effect: filter deletes by tenant"
        assert await store.load_thread(saved_thread.id, context) == saved_thread, untouched
        mine = await store.load_thread_items(saved_thread.id, None, 10, "asc", context)
        assert mine.data == items, untouched
        assert await store.load_attachment(attachment.id, context) == attachment, untouched


@async_tests
@requires("concurrent_writes")
class ConcurrencyTests(StoreFixtures):
    """Concurrent writers on one thread never lose a write."""

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


ID_SAMPLE = 256
"""How many ids the entropy check draws."""

ID_PREFIXES = [("message", "msg_"), ("tool_call", "tc_"), ("task", "tsk_"), ("workflow", "wf_")]


def estimated_bits(ids: list[str]) -> float:
    """Random bits per id, estimated as the sum over character positions of log2(distinct
    characters seen there). Deterministic in practice: with 256 ids every symbol of a hex or
    base64 alphabet shows up at a random position. A counter or clock scores low; it is a
    check of the ids' shape, and cannot see through a hash of a counter."""
    width = max(map(len, ids), default=0)
    seen = [{i[at] for i in ids if len(i) > at} for at in range(width)]
    return sum(math.log2(len(chars)) for chars in seen if chars)


@async_tests
class IdTests(StoreFixtures):
    """Generated ids are distinct; by policy they keep ChatKit's prefixes and 96 random bits."""

    async def test_generated_ids_are_distinct(self, store: Store[Any], context: Ctx) -> None:
        """A few generated thread and item ids are non-empty and all different."""
        thread = models.thread()
        # Few ids, so that even ChatKit's 32-bit default collides once in ~10^8 runs.
        thread_ids = [store.generate_thread_id(context) for _ in range(20)]
        item_ids = [
            store.generate_item_id(kind, thread, context)  # type: ignore[arg-type]
            for kind, _ in ID_PREFIXES
            for _ in range(5)
        ]
        for ids, what in [(thread_ids, "thread"), (item_ids, "item")]:
            assert all(isinstance(i, str) and i for i in ids), (
                f"generated {what} ids must be non-empty strings, got e.g. {ids[:3]!r}"
            )
            assert len(set(ids)) == len(ids), (
                f"20 generated {what} ids collide: ids need many random bits "
                f"(e.g. secrets.token_hex(16)), got e.g. {ids[:3]!r}"
            )

    @requires("id_prefixes")
    async def test_generated_id_prefixes(self, store: Store[Any], context: Ctx) -> None:
        """Generated ids keep ChatKit's prefixes (thr_, msg_, tc_, tsk_, wf_)."""
        thread = models.thread()
        thread_id = store.generate_thread_id(context)
        assert thread_id.startswith("thr_"), (
            f"generated thread id {thread_id!r} lacks ChatKit's 'thr_' prefix (policy "
            "id_prefixes): keep the prefix of chatkit.store.default_generate_id"
        )
        for kind, prefix in ID_PREFIXES:
            item_id = store.generate_item_id(kind, thread, context)  # type: ignore[arg-type]
            assert item_id.startswith(prefix), (
                f"generated {kind} id {item_id!r} lacks ChatKit's {prefix!r} prefix "
                "(policy id_prefixes)"
            )

    @requires("id_entropy")
    async def test_generated_id_entropy(self, store: Store[Any], context: Ctx) -> None:
        """Generated thread and message ids carry at least 96 random bits (measured, no luck)."""
        thread = models.thread()
        samples = {
            "thread": [store.generate_thread_id(context) for _ in range(ID_SAMPLE)],
            "message": [
                store.generate_item_id("message", thread, context) for _ in range(ID_SAMPLE)
            ],
        }
        for what, ids in samples.items():
            bits = estimated_bits(ids)
            assert bits >= 96, (
                f"generated {what} ids carry about {bits:.0f} random bits (distinct characters "
                f"per position over {ID_SAMPLE} ids, e.g. {ids[0]!r}); policy id_entropy wants "
                "96 (ChatKit's default 32 make a collision likely within ~77,000 ids): "
                "generate them from e.g. secrets.token_hex(16)"
            )


@async_tests
@requires("durability")
class DurabilityTests(StoreFixtures):
    """What was written is there after the store is closed and opened again."""

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
