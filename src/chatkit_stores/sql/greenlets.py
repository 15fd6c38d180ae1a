"""Run SQLAlchemy's synchronous pool code from a coroutine, in greenlets kept for reuse.

SQLAlchemy's pool is synchronous; it waits for the driver with ``await_only``, which works in
any greenlet marked ``__sqlalchemy_greenlet_provider__`` (SQLAlchemy 2.0 and 2.1).
SQLAlchemy's own ``greenlet_spawn`` starts a new greenlet on every call, and starting one
costs more than the pool's bookkeeping: about 0.1 ms a store call on SQLite, measured between
other work (`benchmarks/`). ``spawn`` behaves the same and reuses idle greenlets, one list per
thread (a greenlet cannot move between threads).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

T = TypeVar("T")


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
        super().__init__(self._serve)
        self.outcome: _Outcome | None = None

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        while True:
            try:
                self.outcome = _Outcome(fn(*args), None)
            except GreenletExit:
                raise
            except BaseException as error:  # cancellation too: the caller re-raises it
                self.outcome = _Outcome(None, error)
            del fn, args  # an idle worker keeps nothing of the call it ran
            fn, args = self.parent.switch(_DONE)


_idle = threading.local()


async def spawn(fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn(*args)`` in a greenlet where ``await_only`` awaits in this coroutine."""
    idle: list[_Worker] = _idle.__dict__.setdefault("workers", [])
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
    idle.append(worker)
    assert outcome is not None
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[no-any-return]
