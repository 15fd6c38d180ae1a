"""A process writing to SQLite (WAL) through SQLiteStore is killed with SIGKILL, many times.

After every kill: ``PRAGMA integrity_check`` is ok, the database is still in WAL mode, every
write the child reported as done is there, and nothing is half-written (a delete the child
started but did not report is all-or-nothing). The kill delays come from a seeded RNG: they are
the fault, not a way to wait for something.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chatkit_stores import SQLiteStore

from .checks import all_items

ITERATIONS = 50
MAX_KILL_DELAY = 0.3
SEED = 20261130
START_TIMEOUT = 60.0
CHILD = Path(__file__).with_name("crash_writer.py")
THREAD_ID = r"thr_\d+_\d+_\d+"
RECORD = re.compile(rf"^(?:(?:thread|deleting|deleted) {THREAD_ID}|item {THREAD_ID} msg_[\d_]+)\n$")


@dataclass
class Acknowledged:
    """What the children reported as done, over all runs."""

    threads: dict[str, str] = field(default_factory=dict)  # thread id -> tenant
    items: dict[str, set[str]] = field(default_factory=dict)  # thread id -> item ids
    deleting: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    writes: int = 0

    def record(self, line: str) -> None:
        assert RECORD.match(line), f"not a whole record: {line!r}"
        kind, *ids = line.split()
        if kind == "thread":
            self.threads[ids[0]] = "writer-" + ids[0].split("_")[2]
        elif kind == "item":
            self.items.setdefault(ids[0], set()).add(ids[1])
        elif kind == "deleting":
            self.deleting.add(ids[0])
            return
        elif kind == "deleted":
            self.deleted.add(ids[0])
        self.writes += 1


async def run_until_killed(
    writers: asyncio.subprocess.Process, run: int, delay: float, acked: Acknowledged
) -> None:
    """Fork a writer, let it write, SIGKILL it ``delay`` after its first acknowledged write."""
    stdin, stdout = writers.stdin, writers.stdout
    assert stdin is not None and stdout is not None
    stdin.write(f"{run}\n".encode())
    await stdin.drain()

    async def line() -> str:
        text: bytes = await asyncio.wait_for(stdout.readline(), START_TIMEOUT)
        assert text.endswith(b"\n"), f"the writer process ended: {text!r}"
        return text.decode()

    kind, pid = (await line()).split()
    assert kind == "pid"
    acked.record(await line())
    lines: list[str] = []

    async def collect() -> None:
        while not (text := await line()).startswith("end "):
            lines.append(text)

    collecting = asyncio.ensure_future(collect())
    await asyncio.sleep(delay)  # the fault's timing, not synchronisation
    os.kill(int(pid), signal.SIGKILL)
    await asyncio.wait_for(collecting, START_TIMEOUT)
    for text in lines:  # every line was flushed before the kill, or not written at all
        acked.record(text)


def check_database(database: Path, acked: Acknowledged) -> None:
    """Integrity, WAL mode, every acknowledged write, nothing half-written."""
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        threads = {row[0] for row in db.execute("SELECT id FROM chatkit_threads")}
        items: dict[str, set[str]] = {}
        for thread_id, item_id in db.execute("SELECT thread_id, id FROM chatkit_items"):
            items.setdefault(thread_id, set()).add(item_id)
    db.close()
    assert set(items) <= threads, f"items without their thread: {sorted(set(items) - threads)}"
    for thread_id in acked.threads:
        acked_items = acked.items.get(thread_id, set())
        if thread_id in acked.deleted:
            assert thread_id not in threads, f"deleted thread {thread_id} is back"
        elif thread_id in acked.deleting and thread_id not in threads:
            pass  # killed during delete_thread, which committed: items went with it (above)
        else:
            assert thread_id in threads, f"acknowledged thread {thread_id} is missing"
            missing = acked_items - items.get(thread_id, set())
            assert not missing, f"acknowledged items missing from {thread_id}: {missing}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the writer processes are forked")
@pytest.mark.asyncio
async def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    database = tmp_path / "crash.db"
    rng = random.Random(SEED)
    acked = Acknowledged()
    started = time.monotonic()
    writers = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(database),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        for run in range(ITERATIONS):
            await run_until_killed(writers, run, rng.uniform(0, MAX_KILL_DELAY), acked)
            check_database(database, acked)
    finally:
        writers.kill()
        await writers.wait()
    # A store opened on the crashed file reads what was acknowledged.
    store: SQLiteStore[Any] = SQLiteStore(database)
    try:
        survivors = [t for t in acked.threads if t not in acked.deleted | acked.deleting]
        for thread_id in survivors[-20:]:
            context = {"user_id": acked.threads[thread_id]}
            stored = {item.id for item in await all_items(store, thread_id, context)}
            assert acked.items.get(thread_id, set()) <= stored
    finally:
        await store.close()
    print(
        f"\n[crash] {ITERATIONS} SIGKILLs, integrity ok after each; {acked.writes} acknowledged "
        f"writes ({len(acked.threads)} threads, {sum(map(len, acked.items.values()))} items, "
        f"{len(acked.deleted)} deletes), all found; {time.monotonic() - started:.1f} s"
    )
