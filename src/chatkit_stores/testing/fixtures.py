"""Fixtures every conformance test class shares, and small helpers the tests use."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from chatkit.store import Store
from chatkit.types import Page, ThreadItem, ThreadMetadata

from . import models
from .capabilities import Capabilities, missing
from .models import T0, new_id

Ctx = Any
R = TypeVar("R")
C = TypeVar("C", bound=type)
Reopen = Callable[[Store[Any]], Awaitable[Store[Any]]]


def async_tests(cls: C) -> C:
    """Mark each ``async def test_*`` of the class ``pytest.mark.asyncio``, as if one by one.

    pytest-asyncio's strict mode runs only marked tests; subclasses inherit the marked tests.
    """
    for name, value in list(vars(cls).items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            setattr(cls, name, pytest.mark.asyncio(value))
    return cls


async def collect(
    store: Store[Any], thread_id: str | None, order: str, limit: int, context: Ctx
) -> tuple[list[str], list[Page[Any]]]:
    """Walk every page of threads (``thread_id=None``) or items; return all ids and the pages."""
    ids: list[str] = []
    pages: list[Page[Any]] = []
    after: str | None = None
    for _ in range(10_000):
        if thread_id is None:
            page: Page[Any] = await store.load_threads(limit, after, order, context)
        else:
            page = await store.load_thread_items(thread_id, after, limit, order, context)
        pages.append(page)
        ids += [obj.id for obj in page.data]
        if not page.has_more:
            return ids, pages
        after = page.after
    raise AssertionError("pagination never ended: has_more stayed True")


async def add_items(
    store: Store[Any], thread: ThreadMetadata, count: int, context: Ctx, *, step: timedelta | None
) -> list[ThreadItem]:
    """Add ``count`` messages ``step`` apart (all at one instant when ``step`` is None)."""
    items: list[ThreadItem] = []
    for i in range(count):
        at = T0 + (step * i if step else timedelta(0))
        item = models.assistant_message(thread.id, at, text=f"item {i}")
        await store.add_thread_item(thread.id, item, context)
        items.append(item)
    return items


async def expect_error(
    awaitable: Awaitable[Any], error: type[BaseException], breaks: str
) -> BaseException:
    """Await ``awaitable``, which must raise ``error``; else fail saying what ``breaks``."""
    try:
        value = await awaitable
    except error as raised:
        return raised
    except Exception as other:
        raise AssertionError(
            f"{breaks} (expected {error.__name__}, got {type(other).__name__}: {other})"
        ) from other
    raise AssertionError(f"{breaks} (expected {error.__name__}, returned {_short(value)})")


async def expect_ok(awaitable: Awaitable[R], breaks: str) -> R:
    """Await ``awaitable``; if it raises, fail saying what ``breaks`` instead of re-raising."""
    try:
        return await awaitable
    except Exception as raised:
        raise AssertionError(f"{breaks} (raised {type(raised).__name__}: {raised})") from raised


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class StoreFixtures:
    """The fixtures every store test class uses. Override ``store``; the others if needed."""

    @pytest_asyncio.fixture
    async def store(self) -> AsyncIterator[Store[Any]]:
        """Yield the store under test. Override this in your subclass."""
        raise NotImplementedError("Override the `store` fixture to yield your Store")
        yield  # pragma: no cover

    @pytest.fixture
    def capabilities(self) -> Capabilities:
        """What the store supports; override to disable features it lacks."""
        return Capabilities()

    @pytest.fixture
    def make_context(self) -> Callable[[], Ctx]:
        """A factory of request contexts, each of a new tenant. Override for your context type."""
        return lambda: {"user_id": new_id("user")}

    @pytest.fixture
    def context(self, make_context: Callable[[], Ctx]) -> Ctx:
        """A request context of one tenant."""
        return make_context()

    @pytest.fixture
    def other_context(self, make_context: Callable[[], Ctx]) -> Ctx:
        """A request context of another tenant."""
        return make_context()

    @pytest.fixture
    def reopen(self) -> Reopen | None:
        """An async callable that closes a store and opens a new one on the same storage.

        Needed by the durability tests, which skip while it is None.
        """
        return None

    @pytest.fixture(autouse=True)
    def _skip_unsupported(self, request: pytest.FixtureRequest, capabilities: Capabilities) -> None:
        reason = missing(capabilities, getattr(request.function, "chatkit_requires", ()))
        if reason:
            pytest.skip(reason)

    @pytest_asyncio.fixture
    async def saved_thread(self, store: Store[Any], context: Ctx) -> ThreadMetadata:
        """A thread already saved for ``context``."""
        thread = models.thread()
        await store.save_thread(thread, context)
        return thread
