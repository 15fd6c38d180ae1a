"""``python -m benchmarks.encryption``: what encryption at rest costs, and nothing else.

The main benchmark runs the ``encrypted`` variant beside the others; on a busy machine its
ratio to ``ours`` drowns in the noise of five variants measured minutes apart. This runs the
same sessions and turns with only ``ours`` and ``encrypted``, alternating every session (so a
burst of load from elsewhere hits both alike), with more rounds, and prints:

- the CPU cost per blob of sealing and opening the workload's items, next to what the store
  already spends serializing and validating them (best of several repeats: noise only adds);
- per-call median latency and turns/s, encrypted / plain, and issue 19's targets
  (at most 1.15x per call, at least 0.9x the turns/s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import timeit
import warnings
from pathlib import Path
from typing import Any

from chatkit.types import ThreadItem
from pydantic import TypeAdapter

from . import variants
from .__main__ import URL_ENV
from .config import Config
from .report import BACKENDS, Targets, encryption_table, target_lines
from .run import run_backend
from .variants import bench_keys
from .workload import MAIN_THREAD, Content

PAIR = ("ours", "encrypted")


def cpu_costs(repeat: int = 5, number: int = 300) -> list[list[str]]:
    """Per item of a turn: its size, and microseconds to dump, validate, seal and open it
    (decrypted, and known to the ring's cache: a row read again)."""
    keys, cold = bench_keys(), bench_keys(cache_bytes=0)
    adapter = TypeAdapter[ThreadItem](ThreadItem)
    row = ("items", "tenant-1", MAIN_THREAD)
    rows = []
    for item in Content(seed=42).turn_items(MAIN_THREAD):
        data = item.model_dump_json()
        blob = keys.seal(data, *row, item.id)

        def best(call: Any) -> float:
            return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6

        rows.append(
            [
                item.type,
                f"{len(data):,}",
                f"{len(blob):,}",
                f"{best(item.model_dump_json):.1f}",
                f"{best(lambda: adapter.validate_json(data)):.1f}",  # noqa: B023
                f"{best(lambda: keys.seal(data, *row, item.id)):.1f}",  # noqa: B023
                f"{best(lambda: cold.open(blob, *row, item.id)):.1f}",  # noqa: B023
                # a fresh copy, as a row read from the database is (its hash not yet known)
                f"{best(lambda: keys.open(blob[:-1] + blob[-1], *row, item.id)):.1f}",  # noqa: B023
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run it; print Markdown tables and the targets."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.encryption", description=__doc__)
    p.add_argument("--backends", default="sqlite,postgresql,mysql")
    p.add_argument("--sessions", type=int, default=60, help="sessions per variant per round")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--turns", type=int, default=200, help="turns per throughput measurement")
    p.add_argument("--prefix", default="benchenc_")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (for the tests)")
    p.add_argument("--cold", action="store_true", help="no key ring cache: every read decrypts")
    p.add_argument("--compress", action="store_true", help="deflate rows before sealing them")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", "Direct usage of named widget classes", DeprecationWarning)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chatkit-bench-") as folder:
        urls = {}
        for backend in args.backends.split(","):
            url = f"sqlite:///{folder}/bench.db" if backend == "sqlite" else None
            url = url or os.environ.get(URL_ENV[backend])
            if not url:
                raise SystemExit(f"set {URL_ENV[backend]} for {backend}")
            urls[backend] = url
        config = Config(urls=urls, cache_dir=Path(folder), prefix=args.prefix).quick()
        config.sessions, config.repetitions, config.turns = (
            args.sessions,
            args.repetitions,
            args.turns,
        )
        if args.tiny:
            config.tiny()
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        header = ["item", "JSON bytes", "stored bytes", "dump us", "validate us", "seal us"]
        if args.cold:
            variants.ENCRYPTION_CACHE_BYTES = 0
        variants.ENCRYPTION_COMPRESS = args.compress
        costs = cpu_costs(number=3 if args.tiny else 300)
        header += ["open us", "open again us"]
        lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in costs]
        print("### CPU per blob (best of 5)\n\n" + "\n".join(lines) + "\n")
        result = {
            "backends": {
                backend: asyncio.run(run_backend(config.target(backend), config, log, PAIR))
                for backend in config.backends
            }
        }
    found = Targets()
    for backend, data in result["backends"].items():
        found.encryption(backend, data)
    names = ", ".join(BACKENDS[b] for b in result["backends"])
    cache = "no cache: every read decrypts" if args.cold else "default key ring cache"
    cache += ", rows deflated before sealing" if args.compress else ""
    print(f"### Encrypted / plain, same run ({names}; {cache})\n\n{encryption_table(result)}\n")
    print(f"```\n{target_lines(found)}\n```")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
