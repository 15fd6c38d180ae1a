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


def imported(module: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has imported after importing ``module``."""
    code = f"import sys, {module}; print(*sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_plugin_import_is_light() -> None:
    """Every pytest run of a user imports the plugin: it must not pull in SQLAlchemy or drivers."""
    heavy = ("sqlalchemy", "asyncpg", "aiomysql", "aiosqlite", "chatkit")
    assert imported("chatkit_stores.pytest_plugin", heavy) == []


def test_testing_names_import() -> None:
    from chatkit_stores import demo, testing

    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert set(testing.__all__) <= set(dir(testing))
    assert testing.EchoServer is demo.EchoServer


def test_testing_import_is_light() -> None:
    """``import chatkit_stores.testing`` imports pytest, hypothesis and chatkit.server on use."""
    heavy = ("pytest", "hypothesis", "chatkit.server", "chatkit_stores.demo")
    assert imported("chatkit_stores.testing", heavy) == []
