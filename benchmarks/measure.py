"""Timing: per-operation samples, percentiles, and a probe for event-loop stalls."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
from collections import defaultdict
from collections.abc import Awaitable
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


async def between_calls() -> None:
    """Yield to the event loop once, as a server does between store calls (it streams events).

    A store that never suspends (the naive sqlite3 one) would otherwise hold the loop for a
    whole session, and the stall probe could not tell one call from many.
    """
    await asyncio.sleep(0)


class Recorder:
    """Collects the latency of every awaited store call, by operation name."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    async def __call__(self, operation: str, call: Awaitable[T]) -> T:
        """Await ``call`` and record how long it took as ``operation``."""
        start = perf_counter()
        result = await call
        self.samples[operation].append(perf_counter() - start)
        await between_calls()
        return result

    def merge(self, other: Recorder) -> None:
        """Add another recorder's samples to this one."""
        for operation, values in other.samples.items():
            self.samples[operation].extend(values)


def p99(values: list[float]) -> float:
    """The 99th percentile (the value itself for a single sample)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def summary(seconds: list[float]) -> dict[str, Any]:
    """Median and 99th percentile in milliseconds, and the number of samples."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": statistics.median(ms), "p99_ms": p99(ms), "n": len(ms)}


class LoopLagProbe:
    """Sleeps ``interval`` seconds in a loop and records how late each wake-up was.

    A late wake-up means something held the event loop: a blocking call, a garbage-collector
    pause (recorded separately: it hits whichever code runs when it triggers), or, with many
    clients, a long queue of ready callbacks. The epoll timer adds up to ~0.1 ms of its own.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._due = float("inf")
        self.gc_pauses: list[float] = []
        self._gc_start = 0.0

    async def __aenter__(self) -> LoopLagProbe:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it start before the workload does
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        overdue = asyncio.get_running_loop().time() - self._due
        if overdue > 0:  # the last wake-up never came: count it before cancelling
            self.lags.append(overdue)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = perf_counter()
        else:
            self.gc_pauses.append(perf_counter() - self._gc_start)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - self._due))
            self._due = float("inf")

    def summary(self) -> dict[str, float]:
        """The worst and the 99th-percentile lateness, and the longest GC pause, in ms."""
        gc_ms = max(self.gc_pauses, default=0.0) * 1000
        if not self.lags:
            return {"max_ms": 0.0, "p99_ms": 0.0, "gc_max_ms": gc_ms}
        ms = [lag * 1000 for lag in self.lags]
        return {"max_ms": max(ms), "p99_ms": p99(ms), "gc_max_ms": gc_ms}
