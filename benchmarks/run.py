"""One benchmark run: every variant of every backend, interleaved, into one result dict."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from time import perf_counter
from typing import Any, TypeVar

from chatkit.types import ThreadItem, ThreadMetadata
from sqlalchemy import text

from .bulk import ITEM_COLUMNS, THREAD_COLUMNS, empty_tables, load
from .config import Config
from .environment import environment
from .measure import LoopLagProbe, Recorder, between_calls, summary
from .scaling import run_scaling
from .variants import VARIANTS, BenchStore, Target, bench_keys, open_variant, ours
from .workload import (
    BROWSE,
    LONG_THREAD,
    MAIN_THREAD,
    SEED_ITEMS,
    T0,
    Content,
    HistoryWalk,
    SessionData,
    session,
    turn,
)

T = TypeVar("T")
Log = Callable[[str], None]

MIN_TURNS_PER_CLIENT = 4
"""Fewer turns per client would time little more than the start and the end of the burst."""

SERVER_VERSION = {
    "sqlite": "SELECT sqlite_version()",
    "postgresql": "SHOW server_version",
    "mysql": "SELECT VERSION()",
}


def thread_row(tenant: str, thread: ThreadMetadata, keys: Any = None) -> tuple[Any, ...]:
    """A threads-table row (see ``bulk.THREAD_COLUMNS``), sealed with ``keys`` if given."""
    data = thread.model_dump_json()
    if keys is not None:
        data = keys.seal(data, "threads", tenant, thread.id)
    return (tenant, thread.id, thread.created_at, data)


def item_row(tenant: str, thread_id: str, item: ThreadItem, keys: Any = None) -> tuple[Any, ...]:
    """An items-table row (see ``bulk.ITEM_COLUMNS``), sealed with ``keys`` if given."""
    data = item.model_dump_json()
    if keys is not None:
        data = keys.seal(data, "items", tenant, thread_id, item.id)
    return (tenant, thread_id, item.id, item.type, item.created_at, data)


def keys_of(variant: str) -> Any:
    """The key ring a variant seals its rows with (None: plaintext)."""
    return bench_keys() if variant == "encrypted" else None


def browse_of(variant: str) -> dict[str, str]:
    """The history a variant pages through: a sealed variant reads its own sealed copy."""
    return BROWSE if keys_of(variant) is None else {"tenant_id": f"browse-{variant}"}


def browse_rows(
    config: Config, content: Content, tenant: str, keys: Any
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A tenant with ``browse_threads`` threads and a ``long_thread``-item thread."""
    threads = [
        thread_row(tenant, content.thread(T0 + timedelta(minutes=n)), keys)
        for n in range(config.browse_threads)
    ]
    threads.append(thread_row(tenant, content.thread(T0, LONG_THREAD), keys))
    items = [
        item_row(tenant, LONG_THREAD, item, keys)
        for item in content.history(LONG_THREAD, config.long_thread, T0)
    ]
    return threads, items


def client_tenant(variant: str, client: int | str) -> dict[str, str]:
    """The context of one simulated user: each variant's clients are their own tenants."""
    return {"tenant_id": f"{variant}-{client}"}


def seed_rows(
    config: Config, variants: tuple[str, ...], content: Content
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The browse tenants' history, and for every client a thread with some items (sealed for
    a variant that encrypts)."""
    threads, items = browse_rows(config, content, BROWSE["tenant_id"], None)
    for variant in variants:
        keys = keys_of(variant)
        if keys is not None:
            sealed = browse_rows(config, content, browse_of(variant)["tenant_id"], keys)
            threads, items = threads + sealed[0], items + sealed[1]
        for client in [*range(max(config.clients)), "latency"]:
            tenant = client_tenant(variant, client)["tenant_id"]
            threads.append(thread_row(tenant, content.thread(T0, MAIN_THREAD), keys))
            history = content.history(MAIN_THREAD, SEED_ITEMS, T0)
            items.extend(item_row(tenant, MAIN_THREAD, item, keys) for item in history)
    return threads, items


def rotated(names: tuple[str, ...], start: int) -> Iterator[str]:
    """The variants in round-robin order, starting one later each round."""
    for n in range(len(names)):
        yield names[(start + n) % len(names)]


async def _untimed(_operation: str, call: Awaitable[T]) -> T:
    result = await call
    await between_calls()
    return result


async def turns_per_second(
    store: BenchStore,
    variant: str,
    clients: int,
    config: Config,
    content: Content,
    probe: LoopLagProbe,
    turn_times: Recorder,
) -> float:
    """``clients`` concurrent users each running their share of ``config.turns`` turns."""
    per_client = max(MIN_TURNS_PER_CLIENT, config.turns // clients)
    work = [
        [content.turn_items(MAIN_THREAD) for _ in range(per_client)] for _ in range(clients)
    ]  # built before the clock starts

    async def user(client: int) -> None:
        context = client_tenant(variant, client)
        for items in work[client]:
            await turn_times("turn", turn(store, context, items, _untimed))

    async with probe:
        start = perf_counter()
        await asyncio.gather(*(user(client) for client in range(clients)))
        elapsed = perf_counter() - start
    return per_client * clients / elapsed


async def server_version(store: Any, backend: str) -> str:
    """The database server's version string."""
    async with store.engine.connect() as conn:
        return str(await conn.scalar(text(SERVER_VERSION[backend])))


async def idle_noise(seconds: float = 1.0) -> dict[str, float]:
    """Loop lateness with nothing running: the machine's own noise floor."""
    async with LoopLagProbe() as probe:
        await asyncio.sleep(seconds)
    return probe.summary()


class BackendRun:
    """Every variant of one backend, measured round robin in one process."""

    def __init__(
        self, target: Target, config: Config, log: Log, names: tuple[str, ...] | None = None
    ) -> None:
        self.target, self.config, self.log = target, config, log
        self.names = VARIANTS[target.backend] if names is None else names
        self.content = Content(seed=42)
        self.stores: dict[str, BenchStore] = {}
        self.latency = {name: Recorder() for name in self.names}
        self.probes = {name: {"latency": LoopLagProbe()} for name in self.names}
        self.walks = {name: HistoryWalk(browse=browse_of(name)) for name in self.names}
        self.rates = {name: {c: list[float]() for c in config.clients} for name in self.names}
        self.turns = {name: {c: Recorder() for c in config.clients} for name in self.names}
        self.version = ""

    async def prepare(self) -> None:
        """Create and empty the tables, bulk-load the seed rows, open every variant."""
        config, target = self.config, self.target
        admin = ours(target, config.prefix, 1)
        try:
            await admin.create_schema()
            await empty_tables(admin, config.prefix)
            threads, items = seed_rows(config, self.names, self.content)
            await load(target, f"{config.prefix}threads", THREAD_COLUMNS, threads)
            await load(target, f"{config.prefix}items", ITEM_COLUMNS, items)
            self.version = await server_version(admin, target.backend)
        finally:
            await admin.close()
        self.log(f"{target.backend} {self.version}: {len(threads)} threads, {len(items)} items")
        for name in self.names:
            self.stores[name] = await open_variant(name, target, config.prefix, config.pool_size)

    async def measure_latency(self) -> None:
        """Single-client sessions, one per variant in turn, after an unrecorded warm-up."""
        for warm_up in (True, False):
            rounds = 2 if warm_up else self.config.repetitions * self.config.sessions
            for n in range(rounds):
                for name in rotated(self.names, n):
                    record = Recorder() if warm_up else self.latency[name]
                    context = client_tenant(name, "latency")
                    # The warm-up's one-time costs (connecting, compiling statements, SQLite's
                    # schema check) are left out of the stall probe as of the latencies.
                    probe = LoopLagProbe() if warm_up else self.probes[name]["latency"]
                    data = SessionData.build(self.content)
                    async with probe:
                        await session(self.stores[name], context, data, self.walks[name], record)
        self.log(f"{self.target.backend}: latency done")

    async def measure_throughput(self) -> None:
        """Turns/s at each concurrency, the variants round robin within each repetition."""
        for clients in self.config.clients:
            for repetition in range(self.config.repetitions):
                for name in rotated(self.names, repetition):
                    probe = self.probes[name].setdefault(str(clients), LoopLagProbe())
                    rate = await turns_per_second(
                        self.stores[name],
                        name,
                        clients,
                        self.config,
                        self.content,
                        probe,
                        self.turns[name][clients],
                    )
                    self.rates[name][clients].append(rate)
            self.log(f"{self.target.backend}: {clients} clients done")

    async def close(self) -> None:
        """Close every variant's connections."""
        for store in self.stores.values():
            await store.close()

    def result(self, idle: dict[str, float]) -> dict[str, Any]:
        """The figures of this backend (JSON-ready)."""
        return {
            "server_version": self.version,
            "pool_size": self.config.pool_size,
            "idle_loop": idle,
            "variants": {name: self._variant(name) for name in self.names},
        }

    def _variant(self, name: str) -> dict[str, Any]:
        return {
            "latency": {op: summary(s) for op, s in self.latency[name].samples.items()},
            "throughput": {
                str(c): {
                    "turns_per_s": statistics.median(self.rates[name][c]),
                    "runs": self.rates[name][c],
                    "turn": summary(self.turns[name][c].samples["turn"]),
                }
                for c in self.config.clients
            },
            "loop": {phase: probe.summary() for phase, probe in self.probes[name].items()},
        }


async def run_backend(
    target: Target, config: Config, log: Log, names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Latency, throughput and loop stalls of every variant (or ``names``) on one backend."""
    backend = BackendRun(target, config, log, names)
    try:
        await backend.prepare()
        idle = await idle_noise(config.idle_seconds)
        await backend.measure_latency()
        await backend.measure_throughput()
    finally:
        await backend.close()
    return backend.result(idle)


async def run(config: Config, command: str, log: Log = print) -> dict[str, Any]:
    """Run every backend in ``config``; return the result (the JSON the report is made from)."""
    result: dict[str, Any] = {
        "meta": environment(command),
        "config": {
            key: value for key, value in vars(config).items() if key not in ("urls", "cache_dir")
        },
        "backends": {},
        "scaling": {},
    }
    for backend in config.backends:
        target = config.target(backend)
        if config.workload:
            result["backends"][backend] = await run_backend(target, config, log)
        if config.scaling:
            result["scaling"][backend] = await run_scaling(target, config, log)
    return result
