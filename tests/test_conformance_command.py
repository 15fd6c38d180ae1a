"""``chatkit-stores conformance MODULE:FACTORY``: the suite against a factory, no test file.

The runs go through a real subprocess (``python -m chatkit_stores`` or the console script),
from a directory holding the factory module; each takes a few seconds, most of it importing
chatkit. Bad input is checked once end to end and otherwise in-process: ``main`` returns 2
before pytest starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatkit_stores.cli import main

# The Hypothesis state machine (StatefulTests) is tested elsewhere and is the slowest test.
NOT_STATEFUL = "not stateful"


def command() -> list[str]:
    """The installed console script (no cwd on sys.path), else ``python -m chatkit_stores``."""
    script = shutil.which("chatkit-stores", path=sysconfig.get_path("scripts"))
    return [script] if script else [sys.executable, "-m", "chatkit_stores"]


def conformance(
    cwd: Path, *args: str, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [*(prefix or [sys.executable, "-m", "chatkit_stores"]), "conformance", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write(directory: Path, name: str, source: str) -> None:
    (directory / name).write_text(textwrap.dedent(source), encoding="utf-8")


def test_memory_store_passes_the_whole_suite(tmp_path: Path) -> None:
    write(
        tmp_path,
        "memory_factory.py",
        """
        import uuid
        from pathlib import Path

        from chatkit_stores import MemoryStore
        from chatkit_stores.testing import Capabilities

        capabilities = Capabilities(durability=False)

        def make():
            return MemoryStore()

        def make_context():
            with Path("contexts.log").open("a") as log:
                log.write("context\\n")
            return {"user_id": uuid.uuid4().hex}
        """,
    )
    # The user's own pytest settings and conftest.py must not be picked up.
    write(tmp_path, "conftest.py", "raise RuntimeError('the project conftest.py was loaded')\n")
    write(tmp_path, "pytest.ini", "[pytest]\naddopts = --no-such-option\nasyncio_mode = auto\n")

    result = conformance(tmp_path, "memory_factory:make", "-v", "-k", NOT_STATEFUL)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "chatkit-stores conformance: StoreTests against memory_factory:make" in out
    assert "capabilities: memory_factory.capabilities (disabled: durability)" in out
    assert re.search(r"asyncio: mode=(Mode\.)?strict", out, re.IGNORECASE), "not strict mode"
    assert "TestStore::test_items_paginate[1-asc] PASSED" in out
    assert "TestStore::test_conversation PASSED" in out
    assert "TestStore::test_survives_reopen SKIPPED" in out
    assert " passed, 1 skipped" in out.splitlines()[-1]
    assert "PytestAssertRewriteWarning" not in out
    assert (tmp_path / "contexts.log").read_text().count("context") > 50, "make_context unused"
    assert not (tmp_path / ".pytest_cache").exists()


def test_sqlite_async_context_manager_with_reopen(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sqlite_factory.py",
        """
        from contextlib import asynccontextmanager

        from chatkit_stores import SQLiteStore

        @asynccontextmanager
        async def make():
            async with SQLiteStore("chat.db") as store:  # relative to where the command runs
                yield store

        async def reopen(store):
            await store.close()
            return SQLiteStore("chat.db")
        """,
    )
    selection = f"(paginate or round_trip or survives_reopen) and {NOT_STATEFUL}"

    # The console script: the current directory is importable there too.
    result = conformance(tmp_path, "sqlite_factory:make", "-q", "-k", selection, prefix=command())

    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary  # durability ran
    assert (tmp_path / "chat.db").is_file()


def test_broken_store_fails_with_pytest_report(tmp_path: Path) -> None:
    write(
        tmp_path,
        "broken_factory.py",
        """
        from chatkit_stores import MemoryStore

        class UnorderedStore(MemoryStore):
            async def load_thread_items(self, thread_id, after, limit, order, context):
                return await super().load_thread_items(thread_id, after, limit, "asc", context)
        """,
    )

    result = conformance(
        tmp_path, "broken_factory:UnorderedStore", "-k", f"paginate and {NOT_STATEFUL}"
    )

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "capabilities: default (disabled: none)" in out
    assert "reopen: none, the durability tests skip" in out
    assert "FAILED" in out and "TestStore::test_items_paginate[" in out
    assert "-desc]" in out
    assert "AssertionError: items must come in created_at order" in out  # the traceback shows
    assert " failed, " in out.splitlines()[-1]


def test_factory_that_raises_exits_2_end_to_end(tmp_path: Path) -> None:
    write(tmp_path, "raising.py", "def make():\n    raise ConnectionError('no database')\n")

    result = conformance(tmp_path, "raising:make")

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "chatkit-stores conformance: error: calling raising:make raised ConnectionError: "
        "no database\n"
    )


FACTORIES = """
from contextlib import asynccontextmanager

from chatkit_stores import MemoryStore

not_callable = 3

def raises():
    raise ValueError("no database\\nsecond line")

def returns_int():
    return 42

async def returns_none():
    return None

@asynccontextmanager
async def yields_str():
    yield "store"

async def yields_twice():
    yield MemoryStore()
    yield MemoryStore()

async def yields_nothing():
    return
    yield

class NeedsArguments(MemoryStore):
    def __init__(self, path):
        super().__init__()
"""


@pytest.fixture
def bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write(tmp_path, "factories.py", FACTORIES)
    write(tmp_path, "raises_on_import.py", "raise RuntimeError('broken at import')\n")
    write(
        tmp_path,
        "bad_settings.py",
        """
        from chatkit_stores import MemoryStore

        capabilities = {"durability": False}
        make = MemoryStore
        """,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in ("factories", "raises_on_import", "bad_settings"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nocolon", "expected MODULE:FACTORY (e.g. my_stores:make_store), got 'nocolon'"),
        ("factories:", "expected MODULE:FACTORY"),
        (":make", "expected MODULE:FACTORY"),
        ("no_such_module:make", "cannot import 'no_such_module': ModuleNotFoundError"),
        ("raises_on_import:make", "cannot import 'raises_on_import': RuntimeError: broken at"),
        ("factories.py:make", "drop the .py"),
        ("factories:missing", "'factories' has no attribute 'missing'"),
        ("factories:not_callable", "factories:not_callable is an int, not a callable"),
        ("factories:raises", "calling factories:raises raised ValueError: no database"),
        ("factories:returns_int", "factories:returns_int returned an int, not a chatkit.store"),
        ("factories:returns_none", "factories:returns_none returned None, not a chatkit.store"),
        ("factories:yields_str", "factories:yields_str yielded a str, not a chatkit.store"),
        ("factories:yields_twice", "factories:yields_twice yielded more than once"),
        ("factories:yields_nothing", "returned without yielding a store"),
        ("factories:NeedsArguments", "raised TypeError: "),
        ("bad_settings:make", "bad_settings.capabilities is a dict, not a chatkit_stores"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    bad_inputs: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    assert main(["conformance", target, "-q"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("chatkit-stores conformance: error: ")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_pytest_asyncio_asks_for_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pytest_asyncio", None)  # find_spec() now returns None

    assert main(["conformance", "anything:make"]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'chatkit-stores[testing]'" in err


def test_cli_does_not_import_pytest() -> None:
    code = (
        "import sys, chatkit_stores.cli, chatkit_stores.__main__; sys.exit('pytest' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
