"""Operations that overlap: one paused at each of its await points while the other runs.

Each test runs a pair of operations through ``interleave.interleavings``: the first is paused
before each of its await points in turn (by default every call of a ``Store`` method; a store can
offer finer ones by overriding ``await_points``, as this package's SQL stores do with each
statement), the second runs to completion there, and the documented winner is asserted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import ThreadItem, ThreadMetadata

from . import models
from .capabilities import requires
from .fixtures import Ctx, StoreFixtures, async_tests, expect_error
from .interleave import instrument, interleavings

STORE_METHODS = (
    "load_thread",
    "save_thread",
    "load_threads",
    "delete_thread",
    "load_thread_items",
    "add_thread_item",
    "save_item",
    "load_item",
    "delete_thread_item",
    "save_attachment",
    "load_attachment",
    "delete_attachment",
)
"""The ``Store`` methods whose calls are await points unless ``await_points`` says otherwise."""

AwaitPoints = Callable[[], AbstractContextManager[None]]


@async_tests
class RaceTests(StoreFixtures):
    """Overlapping operations on the same rows have one documented winner."""

    @pytest.fixture
    def await_points(self, store: Store[Any]) -> AwaitPoints:
        """Where the paused side stops: each ``Store`` method call. Override for finer points."""
        return lambda: instrument(store, *STORE_METHODS)

    @requires("merged_thread_saves")
    async def test_a_rename_during_a_response_survives(
        self, store: Store[Any], context: Ctx, await_points: AwaitPoints
    ) -> None:
        """A response saves its thread twice while another request renames it: both stay."""

        async def respond(thread: ThreadMetadata) -> None:
            loaded = await store.load_thread(thread.id, context)
            loaded.metadata = {"step": 1}
            await store.save_thread(loaded, context)
            loaded.metadata = {"step": 2}
            await store.save_thread(loaded, context)

        async def rename(thread: ThreadMetadata) -> None:
            loaded = await store.load_thread(thread.id, context)
            loaded.title = "renamed"
            await store.save_thread(loaded, context)

        with await_points():
            async for thread, run in interleavings(self._thread(store, context), respond, rename):
                run.results()
                final = await store.load_thread(thread.id, context)
                assert (final.title, final.metadata) == ("renamed", {"step": 2}), (
                    f"paused at {run.point!r} (await point {run.at}): a rename made during a "
                    f"response must survive its saves, and the response's last change too; "
                    f"got title {final.title!r}, metadata {final.metadata!r}"
                )

    @requires("delete_wins_over_saves")
    async def test_a_delete_wins_over_a_response_saving_its_thread(
        self, store: Store[Any], context: Ctx, await_points: AwaitPoints
    ) -> None:
        """A thread deleted while a response changes it stays deleted."""

        async def respond(thread: ThreadMetadata) -> None:
            loaded = await store.load_thread(thread.id, context)
            loaded.title = "changed by the response"
            await store.save_thread(loaded, context)

        async def delete(thread: ThreadMetadata) -> None:
            await store.delete_thread(thread.id, context)

        with await_points():
            async for thread, run in interleavings(self._thread(store, context), respond, delete):
                if not isinstance(run.first_error, NotFoundError):  # deleted before loaded
                    run.results()
                await expect_error(
                    store.load_thread(thread.id, context),
                    NotFoundError,
                    f"paused at {run.point!r} (await point {run.at}): the response's "
                    "save brought back a thread deleted after the response loaded it",
                )

    @requires("insert_if_absent_adds")
    async def test_a_retried_add_never_reverts_a_later_save(
        self, store: Store[Any], context: Ctx, await_points: AwaitPoints
    ) -> None:
        """``add_thread_item`` of a stored id leaves it as it is (ChatKit's server relies on it)."""

        async def setup() -> tuple[ThreadMetadata, ThreadItem]:
            thread = await self._thread(store, context)()
            item = models.assistant_message(thread.id, text="pending")
            await store.add_thread_item(thread.id, item, context)
            return thread, item

        async def retry_add(state: tuple[ThreadMetadata, ThreadItem]) -> None:
            thread, item = state
            await store.add_thread_item(thread.id, item, context)

        async def update(state: tuple[ThreadMetadata, ThreadItem]) -> None:
            thread, item = state
            answered = models.assistant_message(thread.id, text="answered")
            answered.id, answered.created_at = item.id, item.created_at
            await store.save_item(thread.id, answered, context)

        with await_points():
            async for (thread, item), run in interleavings(setup, retry_add, update):
                run.results()
                stored = await store.load_item(thread.id, item.id, context)
                assert "answered" in stored.model_dump_json(), (
                    f"paused at {run.point!r} (await point {run.at}): add_thread_item of an "
                    "id already stored replaced the item a later save_item wrote"
                )

    async def test_adds_racing_a_thread_delete(
        self, store: Store[Any], context: Ctx, await_points: AwaitPoints
    ) -> None:
        """Deleting a thread while an item is added raises nothing and leaves it deleted."""

        async def delete(thread: ThreadMetadata) -> None:
            await store.delete_thread(thread.id, context)

        async def add(thread: ThreadMetadata) -> None:
            await store.add_thread_item(thread.id, models.user_message(thread.id), context)

        with await_points():
            async for thread, run in interleavings(self._thread(store, context), delete, add):
                run.results()
                await expect_error(
                    store.load_thread(thread.id, context),
                    NotFoundError,
                    f"paused at {run.point!r} (await point {run.at}): an add_thread_item "
                    "racing delete_thread brought the deleted thread back",
                )

    def _thread(self, store: Store[Any], context: Ctx) -> Callable[[], Any]:
        async def new_thread() -> ThreadMetadata:
            thread = models.thread()
            await store.save_thread(thread, context)
            return thread

        return new_thread


def await_points_of(*targets: tuple[Any, tuple[str, ...]]) -> AwaitPoints:
    """An ``await_points`` value that instruments several ``(object or class, names)``."""

    @contextlib.contextmanager
    def points() -> Any:
        with contextlib.ExitStack() as stack:
            for target, names in targets:
                stack.enter_context(instrument(target, *names))
            yield

    return points
