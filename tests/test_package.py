"""Packaging: public names, cheap imports, the pytest plugin entry point."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import chatkit_stores


def test_public_names_import() -> None:
    for name in chatkit_stores.__all__:
        assert getattr(chatkit_stores, name) is not None
    assert set(chatkit_stores.__all__) <= set(dir(chatkit_stores))


def test_plugin_is_registered() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("chatkit_stores") == "chatkit_stores.pytest_plugin"


def test_plugin_import_is_light() -> None:
    """Every pytest run of a user imports the plugin: it must not pull in SQLAlchemy or drivers."""
    code = (
        "import sys, chatkit_stores.pytest_plugin; "
        "print(sorted(m for m in ('sqlalchemy', 'asyncpg', 'aiomysql', 'aiosqlite', 'chatkit')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
