"""Run SQLAlchemy's synchronous pool code from a coroutine, in greenlets kept for reuse.

SQLAlchemy's pool is synchronous; it waits for the driver with ``await_only``, which works in
any greenlet marked ``__sqlalchemy_greenlet_provider__`` (SQLAlchemy 2.0 and 2.1).
SQLAlchemy's own ``greenlet_spawn`` starts a new greenlet on every call, and starting one
costs more than the pool's bookkeeping: about 0.1 ms a store call on SQLite, measured between
other work (`benchmarks/`). ``spawn`` behaves the same and reuses idle greenlets, one list per
thread (a greenlet cannot move between threads), at most ``MAX_IDLE`` of them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

T = TypeVar("T")

MAX_IDLE = 16
"""Idle greenlets kept per thread; a worker finishing when this many are idle ends.

Reuse pays off for calls that follow each other: in steady traffic a finished call's greenlet
is taken by the next call, and the idle list stays short whatever the concurrency. Only a
burst leaves many idle (50 after 50 concurrent calls, 200 after a storm of 200 cancelled
ones), each holding its frame and saved stack; a burst costs one new greenlet per call
beyond the bound (a few microseconds each). 16 covers SQLAlchemy's default pool (5 + 10
overflow) busy at once.
"""


class _Outcome:
    """What the function in a worker returned or raised."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value = value
        self.error = error


_DONE = object()
"""What a worker switches back with when its function has returned or raised."""


class _Worker(greenlet):  # type: ignore[misc]
    """A greenlet that runs one function per ``switch`` and leaves its ``outcome``."""

    __sqlalchemy_greenlet_provider__ = True  # lets SQLAlchemy's await_only run in it

    def __init__(self) -> None:
        super().__init__(_serve)
        self.outcome: _Outcome | None = None


def _serve(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker's body; its frame never refers to the worker, so a dropped worker is freed."""
    while True:
        try:
            outcome = _Outcome(fn(*args), None)
        except GreenletExit:
            raise
        except BaseException as error:  # cancellation too: the caller re-raises it
            outcome = _Outcome(None, error)
        getcurrent().outcome = outcome
        del fn, args, outcome  # an idle worker keeps nothing of the call it ran
        fn, args = getcurrent().parent.switch(_DONE)


_idle = threading.local()


def _workers() -> list[_Worker]:
    """This thread's idle workers."""
    workers: list[_Worker] = _idle.__dict__.setdefault("workers", [])
    return workers


def _retire(worker: _Worker) -> None:
    """End an idle worker now (it returns to this greenlet)."""
    worker.parent = getcurrent()
    worker.throw()  # GreenletExit, which ends the worker's loop


def release_idle() -> None:
    """End this thread's idle greenlets (a store's ``close`` calls it); calls make new ones."""
    idle = _workers()
    while idle:
        _retire(idle.pop())


async def spawn(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in a greenlet where ``await_only`` awaits in this coroutine."""
    idle = _workers()
    worker = idle.pop() if idle else _Worker()
    caller = getcurrent()
    worker.parent = caller
    worker.gr_context = caller.gr_context  # the calling task's context variables
    value = worker.switch(fn, args)
    while value is not _DONE:  # an awaitable passed to await_only
        try:
            result = await value
        except BaseException:
            value = worker.throw(*sys.exc_info())
        else:
            value = worker.switch(result)
    outcome, worker.outcome = worker.outcome, None
    worker.gr_context = None  # nor the calling task's context variables
    if len(idle) < MAX_IDLE:
        idle.append(worker)
    else:
        _retire(worker)
    assert outcome is not None
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[no-any-return]
