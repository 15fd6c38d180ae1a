"""The machine and software a run measured (recorded in the JSON and on the docs page)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

PACKAGES = (
    "chatkit-stores",
    "openai-chatkit",
    "sqlalchemy",
    "asyncpg",
    "aiomysql",
    "pymysql",
    "aiosqlite",
    "pydantic",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def environment(command: str) -> dict[str, Any]:
    """Date, command, Python, CPU count, package versions and git commit of this run."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": _git_commit(),
    }
