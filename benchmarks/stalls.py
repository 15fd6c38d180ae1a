"""``python -m benchmarks.stalls``: the longest event-loop step inside each store call.

The stall probe of ``python -m benchmarks`` sees every delay of the loop: the machine's own,
garbage-collector pauses, other code. This attributes: it times every callback the loop runs
(``asyncio.Handle._run``, a private hook, fine for a diagnostic) and charges it to the store call
the callback's task is awaiting, minus any garbage-collector pause inside it. Single-client
sessions of our store and the raw driver, alternating, after two unrecorded warm-up rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from .__main__ import URL_ENV
from .config import Config
from .run import BackendRun, client_tenant
from .workload import SessionData, session

T = TypeVar("T")
VARIANTS = ("ours", "raw")
CALL = contextvars.ContextVar[str | None]("call", default=None)


class StepTimer:
    """The longest loop step (GC excluded) per ``(variant, operation)`` while installed."""

    def __init__(self) -> None:
        self.longest: dict[tuple[str, str], float] = defaultdict(float)
        self.variant = ""
        self._gc_total = 0.0
        self._gc_start = 0.0

    def install(self) -> None:
        """Wrap the loop's callback runner and watch the garbage collector."""
        run = asyncio.events.Handle._run
        timer = self

        def timed(handle: Any) -> None:
            call = handle._context.get(CALL)
            start, gc_before = time.perf_counter(), timer._gc_total
            run(handle)
            if call is not None:
                took = time.perf_counter() - start - (timer._gc_total - gc_before)
                key = (timer.variant, call)
                timer.longest[key] = max(timer.longest[key], took)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self._gc_total += time.perf_counter() - self._gc_start


async def record(operation: str, call: Awaitable[T]) -> T:
    """Await a store call with its operation name visible to the timer."""
    token = CALL.set(operation)
    try:
        return await call
    finally:
        CALL.reset(token)


async def unrecorded(operation: str, call: Awaitable[T]) -> T:
    """Await a warm-up call."""
    return await call


async def measure(backend: str, url: str, sessions: int) -> None:
    """Print, for our store and the raw driver, the longest step of each operation."""
    config = Config(urls={backend: url}, cache_dir=Path(tempfile.gettempdir()))
    runner = BackendRun(config.target(backend), config, lambda _: None)
    runner.names = VARIANTS
    await runner.prepare()
    timer = StepTimer()
    timer.install()
    try:
        for n in range(sessions + 2):
            for name in VARIANTS:
                timer.variant = name
                data = SessionData.build(runner.content)
                await session(
                    runner.stores[name],
                    client_tenant(name, "latency"),
                    data,
                    runner.walks[name],
                    record if n >= 2 else unrecorded,
                )
    finally:
        await runner.close()
    for name in VARIANTS:
        steps = {op: ms * 1000 for (v, op), ms in timer.longest.items() if v == name}
        worst = max(steps, key=steps.__getitem__)
        detail = ", ".join(f"{op} {ms:.1f}" for op, ms in sorted(steps.items()))
        print(f"{backend} {name}: longest step {steps[worst]:.1f} ms ({worst}); {detail}")


def main() -> None:
    """Run for SQLite and each server whose URL variable is set."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stalls", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        urls = {"sqlite": f"sqlite:///{folder}/stalls.db"}
        urls |= {b: os.environ[env] for b, env in URL_ENV.items() if os.environ.get(env)}
        for backend, url in urls.items():
            asyncio.run(measure(backend, url, args.sessions))


if __name__ == "__main__":
    main()
