"""``spawn``: SQLAlchemy's greenlet bridge, with greenlets reused between calls."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from greenlet import getcurrent
from sqlalchemy.util import await_only

from chatkit_stores import SQLiteStore
from chatkit_stores.sql.greenlets import MAX_IDLE, _workers, release_idle, spawn

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


async def _in_flight_at_once(calls: int, finish: asyncio.Event | None = None) -> list[Any]:
    """Run ``calls`` spawns all in flight together; weak references to their greenlets."""
    used: list[weakref.ref[Any]] = []
    started, release = asyncio.Event(), finish or asyncio.Event()

    async def hold() -> None:
        if len(used) == calls:
            started.set()
        await release.wait()

    def work() -> None:
        used.append(weakref.ref(getcurrent()))
        await_only(hold())

    tasks = [asyncio.create_task(spawn(work)) for _ in range(calls)]
    await started.wait()
    if finish is None:
        release.set()
    else:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return used


def _kept(refs: list[weakref.ref[Any]]) -> int:
    """How many of these greenlets can still run (an ended one is kept at most by a traceback)."""
    gc.collect()
    return sum(not greenlet.dead for ref in refs if (greenlet := ref()) is not None)


async def test_after_a_burst_at_most_max_idle_greenlets_are_kept() -> None:
    release_idle()
    used = await _in_flight_at_once(50)
    assert _kept(used) == MAX_IDLE  # the others ended
    reused = await spawn(getcurrent)
    assert any(ref() is reused for ref in used)


async def test_after_a_storm_of_cancelled_calls_at_most_max_idle_greenlets_are_kept() -> None:
    release_idle()
    used = await _in_flight_at_once(200, finish=asyncio.Event())  # never set: all cancelled
    assert _kept(used) == MAX_IDLE
    assert await spawn(lambda: await_only(_echo("still serving"))) == "still serving"


async def test_release_idle_ends_every_idle_greenlet() -> None:
    used = await _in_flight_at_once(5)
    assert _kept(used) == 5
    release_idle()
    assert _kept(used) == 0
    assert await spawn(lambda: await_only(_echo("a new one"))) == "a new one"


def test_the_idle_greenlets_of_a_finished_thread_are_freed() -> None:
    used: list[weakref.ref[Any]] = []

    def in_thread() -> None:
        used.extend(asyncio.run(_in_flight_at_once(5)))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    gc.collect()
    assert len(used) == 5
    assert [ref() for ref in used] == [None] * 5


async def test_closing_a_store_ends_the_idle_greenlets(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "chat.db")
    await asyncio.gather(*(store.load_threads(5, None, "asc", {"user_id": "u"}) for _ in range(8)))
    assert _workers(), "the burst left idle greenlets"
    await store.close()
    assert not _workers()
