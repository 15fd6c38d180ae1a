"""The demo: a ChatKit server with a web page on this package's stores (``chatkit-stores demo``).

``run_demo`` serves it (FastAPI and uvicorn, ``pip install 'chatkit-stores[demo]'``);
``EchoServer`` and ``call`` are the small in-process server and client that tests and examples
use, and need no extra.
"""

from __future__ import annotations

import asyncio
import importlib

from .echo import EchoServer, call
from .settings import ENVIRONMENT_HELP, DemoSettings

__all__ = ["ENVIRONMENT_HELP", "DemoSettings", "EchoServer", "call", "run_demo"]

INSTALL_HINT = (
    "chatkit-stores demo needs FastAPI and uvicorn, which come with the demo extra: "
    "pip install 'chatkit-stores[demo]'"
)


def run_demo(settings: DemoSettings, *, check: bool = False) -> int:
    """Serve the demo until interrupted, or with ``check`` run one round trip; the exit code."""
    if check:
        from .check import run_check

        return asyncio.run(run_check(settings))
    missing = [m for m in ("fastapi", "uvicorn", "starlette", "python_multipart") if not _has(m)]
    if missing:
        raise SystemExit(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    from .serve import serve

    serve(settings)
    return 0


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
