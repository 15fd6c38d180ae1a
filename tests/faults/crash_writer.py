"""Writer processes of the crash test: each writes through SQLiteStore until it is killed.

Usage: ``python crash_writer.py DATABASE``, then one run name per line on stdin. The modules are
imported once; for each run a forked process (with its own store and connections) prints
``pid PID``, then one line per write, flushed, only after the call returned (``thread ID``,
``item THREAD ID``, ``deleted ID``), and ``deleting ID`` before a delete starts. The test kills
it with SIGKILL at a random moment; once it is gone this process prints ``end RUN``, after every
line the writer managed to print.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from typing import Any

from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

from chatkit_stores import SQLiteStore

WRITERS = 4
ITEMS = 5
BIG = 200_000
"""Characters of every third item: a write that spans many WAL pages."""

# Models built here, not with chatkit_stores.testing: its imports take seconds, per child.


def say(line: str) -> None:
    # One write() of under PIPE_BUF bytes: a kill cannot leave half a line in the pipe (print
    # may write the text and the newline separately).
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


async def writer(store: SQLiteStore[Any], run: str, number: int) -> None:
    context = {"user_id": f"writer-{number}"}
    for conversation in range(1_000_000):
        thread = ThreadMetadata(id=f"thr_{run}_{number}_{conversation}", created_at=datetime.now())
        await store.save_thread(thread, context)
        say(f"thread {thread.id}")
        for i in range(ITEMS):
            text = "x" * BIG if i % 3 == 2 else f"item {i}"
            item = AssistantMessageItem(
                id=f"msg_{run}_{number}_{conversation}_{i}",
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=text)],
            )
            await store.add_thread_item(thread.id, item, context)
            say(f"item {thread.id} {item.id}")
        if conversation % 3 == 2:
            say(f"deleting {thread.id}")
            await store.delete_thread(thread.id, context)
            say(f"deleted {thread.id}")


async def write(path: str, run: str) -> None:
    store: SQLiteStore[Any] = SQLiteStore(path)
    await asyncio.gather(*(writer(store, run, n) for n in range(WRITERS)))


def serve(path: str) -> None:
    for line in sys.stdin:
        run = line.strip()
        pid = os.fork()
        if pid == 0:
            try:
                say(f"pid {os.getpid()}")
                asyncio.run(write(path, run))
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        say(f"end {run}")


if __name__ == "__main__":
    serve(sys.argv[1])
