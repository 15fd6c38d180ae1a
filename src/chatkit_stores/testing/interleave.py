"""Run two operations interleaved: one paused at each of its await points in turn.

An await point is a call to an instrumented async method (``instrument``): a store method, a
driver statement, a file or S3 call. ``interleavings`` runs ``first`` paused before its 1st,
2nd, ... instrumented call (and once more after its last one), runs ``second`` to completion at
that moment, then lets ``first`` finish. Only the task running ``first`` is ever paused, so
``second`` goes through the same instrumented methods unhindered.

If ``second`` cannot finish while ``first`` is paused (it waits for a lock ``first`` holds),
``first`` is released after ``blocked_after`` seconds and both finish in the order the database
allows: an outcome the test must accept anyway. No other waiting is time-based.

    async for thread, run in interleavings(new_thread, save_changed, rename):
        ...  # assert the documented winner; run.point names where ``first`` was paused
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S")

_pauser: ContextVar[_Pauser | None] = ContextVar("chatkit_stores_pauser", default=None)

BLOCKED_AFTER = 0.5
"""Seconds ``second`` may run while ``first`` is paused before it counts as blocked by it."""

MAX_POINTS = 200


@dataclass
class _Pauser:
    at: int
    seen: int = 0
    point: str | None = None
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)

    async def reach(self, label: str) -> None:
        if self.seen == self.at:
            self.point = label
            self.paused.set()
            await self.resume.wait()
        self.seen += 1


async def checkpoint(label: str) -> None:
    """An await point: the paused side stops here when it is the chosen one."""
    pauser = _pauser.get()
    if pauser is not None:
        await pauser.reach(label)


@contextmanager
def instrument(target: Any, *names: str) -> Iterator[None]:
    """Make each call of the async methods ``names`` of ``target`` an await point (undone after).

    ``target`` is an object (its methods are replaced on the instance) or a class.
    """
    saved = {name: target.__dict__.get(name) for name in names} if isinstance(target, type) else {}
    for name in names:
        original = getattr(target, name)

        def wrap(original: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Any]:
            @functools.wraps(original)
            async def paused(*args: Any, **kwargs: Any) -> Any:
                await checkpoint(name)
                return await original(*args, **kwargs)

            return paused

        setattr(target, name, wrap(original, name))
    try:
        yield
    finally:
        for name in names:
            if isinstance(target, type):
                setattr(target, name, saved[name])
            else:
                delattr(target, name)


@dataclass
class Interleaving:
    """One run: where ``first`` was paused, and what each side returned or raised."""

    at: int
    point: str | None
    first: Any = None
    second: Any = None
    first_error: BaseException | None = None
    second_error: BaseException | None = None
    blocked: bool = False

    def results(self) -> tuple[Any, Any]:
        """Both results; re-raise the first error either side raised."""
        for error in (self.first_error, self.second_error):
            if error is not None:
                raise error
        return self.first, self.second


async def interleave(
    first: Callable[[], Awaitable[Any]],
    second: Callable[[], Awaitable[Any]],
    at: int,
    *,
    blocked_after: float = BLOCKED_AFTER,
) -> Interleaving | None:
    """Pause ``first`` at its ``at``-th await point, run ``second``, finish ``first``.

    Returns None when ``first`` finished before reaching that point (there are no more).
    """
    pauser = _Pauser(at)

    async def paused_first() -> Any:
        _pauser.set(pauser)
        return await first()

    first_task = asyncio.ensure_future(paused_first())
    reached = asyncio.ensure_future(pauser.paused.wait())
    await asyncio.wait({first_task, reached}, return_when=asyncio.FIRST_COMPLETED)
    run = Interleaving(at, pauser.point)
    if not pauser.paused.is_set():
        reached.cancel()
        if first_task.exception() is not None:
            raise first_task.exception()  # type: ignore[misc]
        return None
    second_task = asyncio.ensure_future(second())
    done, _ = await asyncio.wait({second_task}, timeout=blocked_after)
    run.blocked = not done
    pauser.resume.set()
    await asyncio.wait({first_task, second_task})
    for side, task in (("first", first_task), ("second", second_task)):
        if task.exception() is not None:
            setattr(run, f"{side}_error", task.exception())
        else:
            setattr(run, side, task.result())
    return run


async def interleavings(
    setup: Callable[[], Awaitable[S]],
    first: Callable[[S], Awaitable[Any]],
    second: Callable[[S], Awaitable[Any]],
    *,
    blocked_after: float = BLOCKED_AFTER,
) -> AsyncIterator[tuple[S, Interleaving]]:
    """Every interleaving: ``first`` paused at its 1st, 2nd, ... await point in turn.

    ``setup`` runs before each one and returns the state both sides work on (fresh rows, so
    each run starts alike); the caller checks the outcome after each ``(state, run)``.
    """
    for at in range(MAX_POINTS):
        state = await setup()
        run = await interleave(
            functools.partial(first, state),
            functools.partial(second, state),
            at,
            blocked_after=blocked_after,
        )
        if run is None:
            if at == 0:
                raise AssertionError("the first operation reached no await point")
            return
        yield state, run
    raise AssertionError(f"the first operation passed more than {MAX_POINTS} await points")
