"""The ``chatkit-stores`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path

from . import __version__

CONFORMANCE_HELP = """\
Run the store conformance suite (chatkit_stores.testing.StoreTests) against the stores FACTORY
makes, with no test file: prints pytest's report and exits with pytest's exit code.

MODULE is imported with the current directory on sys.path (as with python -m). FACTORY is
called with no arguments, once per test, and may be an @asynccontextmanager function, an async
generator function, an async function or plain callable returning a Store, or a Store class.
A returned store is closed with its close() after the test; a context manager or generator
must release it itself. MODULE may also define, all optional:

  capabilities   a chatkit_stores.testing.Capabilities: features the store lacks
  make_context   a zero-argument callable returning a request context of a new tenant
                 (default: {"user_id": <random>})
  reopen         async (store) -> store: close the store and open a new one on the same
                 data; runs the durability tests, which skip without it

Example my_conformance.py:

  @asynccontextmanager
  async def make_store():
      async with MyStore(DATABASE_URL) as store:
          yield store

  capabilities = Capabilities(concurrent_writes=False)

  $ chatkit-stores conformance my_conformance:make_store -q -x

Everything after MODULE:FACTORY goes to pytest (-q, -v, -x, -k EXPR, --tb=short...). Your
project's conftest.py and pytest ini settings are not used. An unusable MODULE:FACTORY (bad
syntax, import error, missing attribute, a factory that raises or does not make a Store)
exits with 2 and one line on stderr. Needs pip install 'chatkit-stores[testing]'.
"""


def main(argv: list[str] | None = None) -> int:
    """Run the ``chatkit-stores`` command line."""
    parser = argparse.ArgumentParser(prog="chatkit-stores", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="store a conversation in SQLite and read it back")
    demo.add_argument("--db", type=Path, default=Path("chatkit-demo.db"), help="SQLite file")
    conformance = commands.add_parser(
        "conformance",
        help="run the store conformance suite against MODULE:FACTORY",
        description=CONFORMANCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conformance.add_argument(
        "target", metavar="MODULE:FACTORY", help="what makes the stores, e.g. my_stores:make_store"
    )
    conformance.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        metavar="PYTEST_ARG",
        help="passed on to pytest, e.g. -q -x -k paginate",
    )
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        asyncio.run(run_demo(args.db))
    elif args.command == "conformance":
        return _conformance(args.target, args.pytest_args)
    return 0


def _conformance(target: str, pytest_args: list[str]) -> int:
    """Run ``chatkit-stores conformance``, importing pytest only now."""
    if any(importlib.util.find_spec(name) is None for name in ("pytest", "pytest_asyncio")):
        print(
            "chatkit-stores conformance: error: needs pytest and pytest-asyncio: "
            "pip install 'chatkit-stores[testing]'",
            file=sys.stderr,
        )
        return 2
    from .testing.runner import run

    return run(target, pytest_args)
