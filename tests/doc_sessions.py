"""Console sessions shown in the docs, run as written: the output shown is the output produced.

A ```console fence preceded by ``<!-- tests/test_X.py runs this session -->`` is a session:
``$ `` lines are commands, the lines after each one its output (stdout, then stderr). The test
named in the marker runs every session of a page in order, in one process and one working
directory, with :func:`run_sessions`:

- ``$ export NAME=VALUE`` sets a variable, ``$ echo $?`` prints the last exit status, and
  ``$ chatkit-stores ...`` runs the command's ``main()``; ``# comments`` are ignored;
- ``stand_in`` maps what the page shows (``postgresql://app@db/chat``, ``/var/lib/chat/files``)
  to what the test uses, in commands, and back in the output;
- timestamps (``2025-09-01 10:00:00``) are compared by shape only, as they depend on the clock.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatkit_stores.cli import main
from test_docs import fences

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@dataclass
class Step:
    """One ``$`` line of a session and the output the page shows for it."""

    where: str
    command: str
    shown: list[str]


def sessions(page: Path, marker: str) -> Iterator[list[Step]]:
    """The sessions of ``page`` marked ``<!-- {marker} -->``, in page order."""
    for fence in fences(page):
        if fence.lang != "console" or fence.marker != marker:
            continue
        steps: list[Step] = []
        for number, line in enumerate(fence.body.splitlines()):
            if line.startswith("$ "):
                command = line[2:].split("  #", 1)[0].strip()
                steps.append(Step(f"{fence}+{number}", command, []))
            elif steps:
                steps[-1].shown.append(line)
        yield steps


def run_sessions(
    page: Path,
    marker: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stand_in: dict[str, str],
    before: Callable[[int], None] = lambda session: None,
) -> int:
    """Run every session of ``page``; fail on the first output that differs. Returns how many
    commands ran. ``before(n)`` runs before the n-th session (to prepare its data)."""
    status = 0
    ran = 0
    for n, steps in enumerate(sessions(page, marker)):
        before(n)
        for step in steps:
            words = [
                os.path.expandvars(_swap(word, stand_in)) for word in shlex.split(step.command)
            ]
            if words[0] == "export":
                name, _, value = words[1].partition("=")
                monkeypatch.setenv(name, value)
                got = ""
            elif words == ["echo", "$?"]:
                got = f"{status}\n"
            else:
                assert words[0] == "chatkit-stores", f"{step.where}: cannot run {step.command}"
                status = main(words[1:])
                out, err = capsys.readouterr()
                got = out + err
                ran += 1
            shown = [TIMESTAMP.sub("<time>", line) for line in step.shown]
            produced = [TIMESTAMP.sub("<time>", _back(line, stand_in)) for line in got.splitlines()]
            assert produced == shown, f"{step.where}: {step.command}\n{got}"
    return ran


def _swap(text: str, stand_in: dict[str, str]) -> str:
    for shown, real in stand_in.items():
        text = text.replace(shown, real)
    return text


def _back(text: str, stand_in: dict[str, str]) -> str:
    for shown, real in stand_in.items():
        text = text.replace(real, shown)
    return text
