"""Store calls wait for a connection in the order they asked, so none can starve.

SQLAlchemy's async queue pool hands a returned connection to whichever task asks next: a task
that checks a connection in and at once asks again (batch work calling back to back) takes it
before the waiters have run, and they time out (issue 14: 42 of 48 tasks made no call at all).
``Turns`` admits as many calls as the pool has connections and hands each freed place straight
to the longest waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc
from sqlalchemy.pool import Pool, QueuePool, SingletonThreadPool, StaticPool


class Turns:
    """At most ``places`` calls at a time; the others are admitted strictly in arrival order."""

    def __init__(self, places: int, timeout: float | None, what: str) -> None:
        self.places = places
        self.timeout = timeout
        self.what = what
        self._free = places
        self._waiting: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a place (``sqlalchemy.exc.TimeoutError`` after ``timeout``), then hold it."""
        await self._enter()
        try:
            yield
        finally:
            self._leave()

    async def _enter(self) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        place = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            await asyncio.wait_for(asyncio.shield(place), self.timeout)
        except BaseException as error:
            if place.done():
                self._leave()  # handed a place at the same moment: pass it on
            else:
                self._waiting.remove(place)
                place.cancel()
            if isinstance(error, asyncio.TimeoutError):
                raise exc.TimeoutError(
                    f"{self.what} reached, connection timed out, timeout {self.timeout:.2f}"
                ) from None
            raise

    def _leave(self) -> None:
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)  # the place goes straight to the longest waiter
                return
        self._free += 1


def turns_for(pool: Pool) -> Turns | None:
    """The ``Turns`` matching ``pool``'s capacity; None when it has no limit to wait for."""
    if isinstance(pool, (StaticPool, SingletonThreadPool)):  # one connection: calls take turns
        return Turns(1, None, "The single connection of an in-memory SQLite database")
    if isinstance(pool, QueuePool) and pool._max_overflow >= 0:
        size, overflow = pool.size(), pool._max_overflow
        what = f"QueuePool limit of size {size} overflow {overflow}"
        return Turns(size + overflow, pool.timeout(), what)
    return None
