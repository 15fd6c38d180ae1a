"""``python -m benchmarks.soak``: minutes of ChatKit load, pool pressure and a cancellation storm.

Per backend, three parts (figures printed, never asserted; the fairness part says FAIL):

1. **Soak**: tenants loop chat turns, history pages, attachments and thread deletes for
   ``--minutes``. Every ``--sample-every`` calls it samples RSS, objects, greenlets, file
   descriptors and server connections; it prints their growth per 10,000 calls over the
   second half of the run, and p50/p99 per operation over the first and the last window of
   calls, with the row counts at those moments.
2. **Fairness**: a pool smaller than the number of tasks (2 connections, no overflow, 2 s
   timeout); 48 tasks call back to back without yielding. Calls per task, tasks with no call,
   timeouts, the longest call.
3. **Cancellation storm**: 200 tasks call with random timeouts of 0.1-5 ms
   (``asyncio.wait_for``) for ``--storm-seconds``; then what is left: acknowledged writes
   missing, deleted threads with rows back, late overwrites of a thread's title, sessions idle
   in a transaction, statements still running, connections beyond the pool, SQLite's write
   lock, the latency of the next calls, and what reached the logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from .__main__ import URL_ENV
from .bulk import empty_tables
from .environment import environment
from .run import server_version
from .soak_load import Log, SoakConfig, fairness, soak
from .soak_probes import Server, open_server, process
from .soak_report import report
from .soak_storm import storm
from .variants import Target

BACKENDS = ("sqlite", "postgresql", "mysql", "memory")
PARTS = ("soak", "fairness", "storm")
OVERRIDES = ("minutes", "storm_seconds", "fairness_seconds")
OVERRIDES += ("sample_every", "tenants", "storm_tasks", "pool_size")
"""Options that override the ``SoakConfig`` (and ``--quick``) value of the same name."""
OUT = Path("build/benchmarks/soak.json")


# The run


def open_store(target: Target | None, config: SoakConfig, options: dict[str, Any]) -> Any:
    """Our store on ``target`` (``None``: a ``MemoryStore``)."""
    from chatkit_stores import MemoryStore, SQLStore

    if target is None:
        return MemoryStore()
    return SQLStore.from_url(target.url, table_prefix=config.prefix, engine_options=options)


async def after_close(server: Server) -> dict[str, Any]:
    """What is left once the store is closed."""
    await asyncio.sleep(0)  # closed sockets are released on the loop's next iteration
    return {**process(), **(await server.activity())}


async def run_backend(
    backend: str, target: Target | None, config: SoakConfig, parts: tuple[str, ...], log: Log
) -> dict[str, Any]:
    """The chosen parts on one backend, each with its own store."""
    result: dict[str, Any] = {"server_version": "(in process)"}
    if target is not None:
        admin = open_store(target, config, {"pool_size": 1})
        try:
            await admin.create_schema()
            await empty_tables(admin, config.prefix)
            result["server_version"] = await server_version(admin, backend)
        finally:
            await admin.close()
    server = await open_server(target, config.prefix)
    pool = {"pool_size": config.pool_size, "max_overflow": 0}
    steps: dict[str, tuple[dict[str, Any], Callable[[Any], Awaitable[dict[str, Any]]]]] = {
        "soak": (pool, lambda store: soak(store, server, config, log)),
        "fairness": (config.fair_pool, lambda store: fairness(store, config)),
        "storm": (pool, lambda store: storm(store, server, config)),
    }
    try:
        for part in parts:
            if target is None and part != "soak":
                continue  # no pool to share, and its calls never suspend: nothing to cancel
            started = perf_counter()
            store = open_store(target, config, steps[part][0])
            try:
                result[part] = await steps[part][1](store)
            finally:
                if target is not None:
                    await store.close()
            result[part]["after_close"] = await after_close(server)
            log(f"{backend}: {part} done in {perf_counter() - started:.1f} s")
    finally:
        await server.close()
    return result


# The command line


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument(
        "--backends",
        help="comma-separated: sqlite,postgresql,mysql,memory (default: sqlite and each server "
        "whose URL variable is set; memory, the soak part only, when named)",
    )
    p.add_argument("--postgres-url", default=os.environ.get(URL_ENV["postgresql"]))
    p.add_argument("--mysql-url", default=os.environ.get(URL_ENV["mysql"]))
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: soak,fairness,storm")
    p.add_argument("--quick", action="store_true", help="well under a minute per backend")
    p.add_argument("--minutes", type=float, help="soak duration per backend (default 5)")
    p.add_argument("--storm-seconds", type=float, help="cancellation storm duration (default 60)")
    p.add_argument("--fairness-seconds", type=float, help="per operation (default 10)")
    p.add_argument("--sample-every", type=int, help="calls between samples (default 10,000)")
    p.add_argument("--tenants", type=int, help="soak tenants (default 20)")
    p.add_argument("--storm-tasks", type=int, help="cancellation storm tasks (default 200)")
    p.add_argument("--pool-size", type=int, help="pool of the soak and the storm (default 10)")
    p.add_argument("--prefix", default="soak_", help="table prefix (emptied at the start)")
    p.add_argument("--json", type=Path, default=OUT, help=f"where to write JSON (default {OUT})")
    return p


def config_from(args: argparse.Namespace) -> SoakConfig:
    """Sizes and durations from the arguments."""
    config = SoakConfig(prefix=args.prefix)
    if args.quick:
        config.quick()
    for name in OVERRIDES:
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    return config


def targets(args: argparse.Namespace, folder: Path) -> dict[str, Target | None]:
    """The backends to run and their databases (``None``: the memory store)."""
    urls = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
    if args.backends:
        names = [name.strip() for name in args.backends.split(",") if name.strip()]
    else:
        names = ["sqlite", *(name for name, url in urls.items() if url)]
    chosen: dict[str, Target | None] = {}
    for name in names:
        if name not in BACKENDS:
            raise SystemExit(f"Unknown backend {name!r}: choose from {', '.join(BACKENDS)}")
        if name == "sqlite":
            chosen[name] = Target("sqlite", f"sqlite:///{folder / 'soak.db'}")
        elif name == "memory":
            chosen[name] = None
        elif urls[name]:
            chosen[name] = Target(name, urls[name])
        else:
            raise SystemExit(f"No URL for {name!r}: set {URL_ENV[name]} or pass its --*-url")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Run, print the report, write the JSON; 0 even when fairness fails (it is reported)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"Unknown parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    warnings.filterwarnings("ignore", "Direct usage of named widget classes", DeprecationWarning)
    config = config_from(args)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    command = shlex.join(["python", "-m", "benchmarks.soak", *argv])
    result: dict[str, Any] = {"meta": environment(command), "config": vars(config), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="chatkit-soak-") as folder:
        for backend, target in targets(args, Path(folder)).items():
            run = run_backend(backend, target, config, parts, log)
            result["backends"][backend] = asyncio.run(run)
    print(report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
