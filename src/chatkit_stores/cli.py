"""The ``chatkit-stores`` command."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from . import __version__


def main(argv: list[str] | None = None) -> int:
    """Run the ``chatkit-stores`` command line."""
    parser = argparse.ArgumentParser(prog="chatkit-stores", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="store a conversation in SQLite and read it back")
    demo.add_argument("--db", type=Path, default=Path("chatkit-demo.db"), help="SQLite file")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        asyncio.run(run_demo(args.db))
    return 0
