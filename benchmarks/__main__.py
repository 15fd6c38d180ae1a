"""``python -m benchmarks``: run the benchmark, print the tables, write JSON and a chart."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

from .config import Config
from .report import markdown, targets, write_chart, write_json
from .run import run

URL_ENV = {"postgresql": "CHATKIT_STORES_POSTGRES_URL", "mysql": "CHATKIT_STORES_MYSQL_URL"}
OUT = Path("build/benchmarks")


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="chatkit-stores vs a raw driver, the SQLAlchemy ORM and naive sqlite3.",
    )
    p.add_argument(
        "--backends",
        help="comma-separated: sqlite,postgresql,mysql (default: "
        "sqlite plus each server whose URL variable is set)",
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(URL_ENV["postgresql"]),
        help=f"default ${URL_ENV['postgresql']}",
    )
    p.add_argument(
        "--mysql-url", default=os.environ.get(URL_ENV["mysql"]), help=f"default ${URL_ENV['mysql']}"
    )
    p.add_argument("--clients", type=_numbers, help="concurrency levels (default 1,10,50)")
    p.add_argument("--turns", type=int, help="turns per throughput measurement (default 300)")
    p.add_argument("--repetitions", type=int, help="round-robin rounds over the variants")
    p.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (for the tests)")
    p.add_argument(
        "--scaling",
        choices=["on", "off", "only"],
        default="on",
        help="the long-thread / big-table measurements (only: nothing else)",
    )
    p.add_argument("--json", type=Path, default=OUT / "results.json", help="where to write JSON")
    p.add_argument("--chart", type=Path, default=OUT / "turns.png", help="where to write the PNG")
    p.add_argument("--prefix", default="bench_", help="table prefix of the benchmark tables")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "chatkit-stores-bench",
        help="where the SQLite scaling database is kept between runs",
    )
    return p


def config_from(args: argparse.Namespace, sqlite_dir: Path) -> Config:
    """The run configuration the arguments describe."""
    server_urls = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        backends = ["sqlite", *(b for b, url in server_urls.items() if url)]
    urls = {}
    for backend in backends:
        if backend == "sqlite":
            urls[backend] = f"sqlite:///{sqlite_dir / 'bench.db'}"
        elif server_urls.get(backend):
            urls[backend] = server_urls[backend]
        else:
            option = "--postgres-url" if backend == "postgresql" else "--mysql-url"
            raise SystemExit(f"No URL for {backend!r}: pass {option} or set {URL_ENV.get(backend)}")
    config = Config(urls=urls, cache_dir=args.cache_dir, prefix=args.prefix)
    if args.quick:
        config.quick()
    if args.tiny:
        config.tiny()
    for name in ("clients", "turns", "repetitions"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.scaling = args.scaling != "off"
    config.workload = args.scaling != "only"
    return config


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (0 even when targets fail: they are reported)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", "Direct usage of named widget classes", DeprecationWarning)
    with tempfile.TemporaryDirectory(prefix="chatkit-bench-") as sqlite_dir:
        config = config_from(args, Path(sqlite_dir))
        command = shlex.join(["python", "-m", "benchmarks", *argv])
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        result = asyncio.run(run(config, command, log))
    result["targets"] = targets(result)
    print(markdown(result))
    write_json(result, args.json)
    print(f"\nwrote {args.json}", file=sys.stderr)
    if result["backends"]:
        write_chart(result, args.chart)
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
