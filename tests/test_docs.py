"""Every code example in README.md and docs/ runs (or is explicitly marked as not run).

- A ```python fence in docs/ must include a file of docs/examples/ (``--8<--``), which the tests
  run, or be preceded by ``<!-- not run: why -->`` or ``<!-- tests/X.py runs this ... -->``.
- A ```python fence in README.md (which GitHub renders, so it cannot include files) must be
  preceded by ``<!-- same as docs/examples/FILE.py:SECTION -->`` and equal that section, or be
  marked as above.
- Every ``chatkit-stores`` command line in README.md and docs/ parses with the real command line.
- The commands of the "Moving from SQLite to PostgreSQL" page run as written (in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from chatkit.types import ThreadMetadata

from chatkit_stores import SQLiteStore, SQLStore
from chatkit_stores.cli import main as cli_main
from chatkit_stores.migrations import version_table

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted([ROOT / "README.md", *DOCS.glob("**/*.md")])

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
MARKER = re.compile(r"<!--\s*(?P<text>.*?)\s*-->\s*$")
INCLUDE = re.compile(r'--8<--\s+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"')


@dataclass
class Fence:
    page: Path
    line: int
    lang: str
    body: str
    marker: str | None  # the HTML comment on the line before, if any

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fences(page: Path) -> Iterator[Fence]:
    text = page.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n ").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        body = textwrap.dedent(match["body"])
        yield Fence(page, line, match["lang"], body, marker["text"] if marker else None)


def section(path: Path, name: str | None) -> str:
    """A file, or the ``--8<-- [start:name]`` ... ``[end:name]`` part of it, dedented."""
    text = path.read_text()
    if name is None:
        return text
    start = re.search(rf"--8<-- \[start:{name}\].*\n", text)
    end = re.search(rf"^.*--8<-- \[end:{name}\]", text, re.M)
    assert start and end, f"{path.relative_to(ROOT)} has no section {name!r}"
    return textwrap.dedent(text[start.end() : end.start()]).strip("\n") + "\n"


def python_fences() -> list[Fence]:
    return [f for page in PAGES for f in fences(page) if f.lang in ("python", "py", "pycon")]


@pytest.mark.parametrize("fence", python_fences(), ids=str)
def test_python_fence_is_run_or_marked(fence: Fence) -> None:
    includes = list(INCLUDE.finditer(fence.body))
    if fence.page.parent != ROOT and includes:
        for include in includes:
            path = ROOT / include["path"]
            assert path.is_relative_to(EXAMPLES), f"{fence} includes {path}, not an example"
            section(path, include["section"])  # exists
        return
    marker = fence.marker or ""
    if marker.startswith("not run:"):
        assert len(marker) > len("not run:") + 5, f"{fence}: say why it is not run"
        return
    runner = re.match(r"(tests/\S+\.py) runs this", marker)
    if runner:
        test_file = (ROOT / runner[1]).read_text()
        assert fence.page.name in test_file, f"{runner[1]} does not read {fence.page.name}"
        return
    same = re.match(r"same as (docs/examples/[\w/]+\.py)(?::([\w-]+))?$", marker)
    if same and fence.page.parent == ROOT:
        expected = section(ROOT / same[1], same[2])
        assert fence.body.strip() == expected.strip(), f"{fence} differs from {same[0]}"
        return
    pytest.fail(
        f"{fence}: a python example must be a docs/examples file included with --8<-- (in "
        "docs/), a copy marked '<!-- same as docs/examples/F.py:SECTION -->' (in README.md), or "
        "marked '<!-- not run: why -->'"
    )


# command lines


class Parsed(Exception):
    """Raised instead of running the command, once its arguments parsed."""


def command_lines() -> list[tuple[str, str]]:
    """``(where, command)`` for every chatkit-stores command in a shell fence."""
    found = []
    for page in PAGES:
        for fence in fences(page):
            if fence.lang not in ("bash", "console", "sh", "shell", "cron"):
                continue
            for number, raw in enumerate(fence.body.splitlines()):
                line = raw.removeprefix("$ ")
                if fence.lang == "console" and not raw.startswith("$ "):
                    continue
                for part in re.split(r"&&|\|", line.split(" #", 1)[0]):
                    words = part.strip().split()
                    if words and words[0].rsplit("/", 1)[-1] == "chatkit-stores":
                        found.append((f"{fence}+{number}", " ".join(words)))
    return found


@pytest.mark.parametrize(("where", "command"), command_lines(), ids=lambda v: str(v)[:60])
def test_documented_command_parses(
    where: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parse(self, *args, **kwargs)  # type: ignore[call-overload]
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    words = shlex.split(command.split(">", 1)[0])[1:]
    with pytest.raises(Parsed):
        cli_main(words)


# the page "Moving from SQLite to PostgreSQL", run as written


def moving_commands() -> list[str]:
    page = DOCS / "moving.md"
    block = next(f for f in fences(page) if f.marker == "tests/test_docs.py runs these commands")
    return [line[2:] for line in block.body.splitlines() if line.startswith("$ ")]


@pytest.fixture(params=["postgres", "mysql"])
def destination(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database whose default-prefix tables are empty, as a new user's would be."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    asyncio.run(_drop_default_tables(url))  # other tests may have left rows of theirs
    yield url
    asyncio.run(_drop_default_tables(url))


async def _drop_default_tables(url: str) -> None:
    async with SQLStore.from_url(url) as store, store.engine.begin() as conn:
        await conn.run_sync(store.tables.metadata.drop_all)
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {version_table()}")


async def save_threads(path: Path, count: int) -> None:
    async with SQLiteStore(path) as store:
        for n in range(count):
            context = {"user_id": f"user-{n}"}
            thread = ThreadMetadata(
                id=store.generate_thread_id(context), title=f"t{n}", created_at=datetime.now()
            )
            await store.save_thread(thread, context)


def test_moving_page_commands_run(
    destination: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(save_threads(tmp_path / "chat.db", 3))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    outputs = []
    for command in moving_commands():
        if command.startswith("export DATABASE_URL="):
            monkeypatch.setenv("DATABASE_URL", destination)
            continue
        words = shlex.split(command)
        assert words[0] == "chatkit-stores"
        status = cli_main(words[1:])  # the command's own code, in this process
        out, err = capsys.readouterr()
        assert status == 0, f"{command}: {out}{err}"
        outputs.append(out)
    doctor, first_copy, doctor_after, second_copy = outputs
    assert "checked 3 threads" in doctor and "all parse" in doctor
    assert "threads: 3 copied" in first_copy
    assert "all parse" in doctor_after
    assert "threads: 0 copied, 3 already there" in second_copy
