"""``spawn``: SQLAlchemy's greenlet bridge, with greenlets reused between calls."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import weakref
from typing import Any

import pytest
from greenlet import getcurrent
from sqlalchemy.util import await_only

from chatkit_stores.sql.greenlets import spawn

request = contextvars.ContextVar[str]("request")


async def _echo(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("from the driver")


async def test_the_function_awaits_through_await_only_and_returns() -> None:
    def work(a: int, b: int) -> int:
        return int(await_only(_echo(a))) + int(await_only(_echo(b)))

    assert await spawn(work, 2, 3) == 5


async def test_an_error_of_an_awaited_call_is_raised_inside_the_function() -> None:
    seen: list[str] = []

    def work() -> str:
        try:
            await_only(_fail())
        except KeyError:
            seen.append("caught inside")
        raise ValueError("raised by the function")

    with pytest.raises(ValueError, match="raised by the function"):
        await spawn(work)
    assert seen == ["caught inside"]
    assert await spawn(lambda: await_only(_echo("the worker is still usable"))) == (
        "the worker is still usable"
    )


async def test_cancellation_reaches_the_function_which_can_still_clean_up() -> None:
    started, cleaned = asyncio.Event(), []

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def work() -> None:
        try:
            await_only(wait_forever())
        finally:  # cleanup that awaits, as a rollback does
            cleaned.append(await_only(asyncio.shield(_echo("rolled back"))))

    task = asyncio.create_task(spawn(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["rolled back"]


async def test_the_function_sees_the_callers_context_variables() -> None:
    async def call(name: str) -> str:
        request.set(name)
        return await spawn(lambda: await_only(_echo(request.get())))

    assert await asyncio.gather(call("a"), call("b")) == ["a", "b"]
    assert request.get("unset") == "unset"


async def test_greenlets_are_reused_and_concurrent_calls_get_their_own() -> None:
    def which() -> int:
        await_only(asyncio.sleep(0))
        return id(getcurrent())

    sequential = {await spawn(which) for _ in range(50)}
    concurrent = await asyncio.gather(*(spawn(which) for _ in range(5)))
    assert len(sequential) == 1
    assert len(set(concurrent)) == 5


def test_event_loops_in_other_threads_get_their_own_greenlets() -> None:
    results: list[Any] = []

    def in_thread() -> None:
        try:
            results.append(asyncio.run(spawn(lambda: await_only(_echo("ok")))))
        except BaseException as error:  # reported below, not lost in the thread
            results.append(error)

    asyncio.run(spawn(lambda: await_only(_echo("main"))))
    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 3


async def test_an_idle_greenlet_keeps_nothing_of_the_call_it_ran() -> None:
    class Rows(list[int]):
        pass

    class Failure(Exception):
        pass

    refs: list[weakref.ref[Any]] = []

    def fail() -> None:
        error = Failure("kept by an idle greenlet?")
        refs.append(weakref.ref(error))
        raise error

    result = await spawn(Rows, [1, 2])
    refs.append(weakref.ref(result))
    with contextlib.suppress(Failure):
        await spawn(fail)
    del result
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
