"""``MemoryStore`` frees what is deleted: its memory is flat under save/delete churn (issue 14)."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any

from chatkit.types import (
    FileAttachment,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)

import chatkit_stores.memory
from chatkit_stores import MemoryStore

CONTEXT = {"tenant_id": "churn"}
BATCH = 500
"""Objects stored at once: the store's dicts stay small, so growth can only be what it keeps."""
PACKAGE = str(Path(chatkit_stores.memory.__file__).parent / "*")
PAD = "_" * 64
"""Thread ids longer than 64 characters: pydantic's (bounded) cache of parsed strings skips
them, so it cannot be mistaken for growth of the store."""


def attachment(attachment_id: str, thread_id: str | None = None) -> FileAttachment:
    return FileAttachment(
        id=attachment_id, name="a.pdf", mime_type="application/pdf", thread_id=thread_id
    )


async def churn(store: MemoryStore[Any], round_: str, attachments: int, threads: int) -> None:
    """Save and delete attachments, then threads each with an attachment and a message."""
    for start in range(0, attachments, BATCH):
        ids = [f"atc_{round_}_{n}" for n in range(start, start + BATCH)]
        for attachment_id in ids:
            await store.save_attachment(attachment(attachment_id), CONTEXT)
        for attachment_id in ids:
            await store.delete_attachment(attachment_id, CONTEXT)
    for start in range(0, threads, BATCH):
        thread_ids = [f"thr_{round_}_{n}{PAD}" for n in range(start, start + BATCH)]
        for n, thread_id in enumerate(thread_ids, start):
            thread = ThreadMetadata(id=thread_id, created_at=datetime.now())
            await store.save_thread(thread, CONTEXT)
            file = attachment(f"atc_{round_}_t{n}", thread_id)
            await store.save_attachment(file, CONTEXT)
            message = UserMessageItem(
                id=f"msg_{round_}_{n}",
                thread_id=thread_id,
                created_at=datetime.now(),
                content=[UserMessageTextContent(text="see attached")],
                attachments=[file],
                inference_options=InferenceOptions(),
            )
            await store.add_thread_item(thread_id, message, CONTEXT)
        for thread_id in thread_ids:
            await store.delete_thread(thread_id, CONTEXT)


def entries(store: MemoryStore[Any]) -> dict[str, int]:
    """How many entries each of the store's containers holds."""
    held = {name: len(value) for name, value in vars(store).items() if isinstance(value, dict)}
    held["loaded_threads"] = len(store.loaded_threads._seen)
    return held


async def test_nothing_is_kept_after_50000_attachments_and_5000_threads_are_deleted() -> None:
    store: MemoryStore[Any] = MemoryStore()
    await churn(store, "warm-up", BATCH, BATCH)
    gc.collect()
    blocks = sys.getallocatedblocks()
    await churn(store, "measured", 50_000, 5_000)
    gc.collect()
    grown = sys.getallocatedblocks() - blocks
    # The old store kept a tuple, a datetime and an id string per attachment: 165,000 blocks.
    assert grown < 1_000, f"{grown} more memory blocks after 55,000 deleted attachments"
    assert set(entries(store).values()) == {0}, entries(store)


async def test_the_stores_own_allocations_are_flat_under_churn() -> None:
    store: MemoryStore[Any] = MemoryStore()
    tracemalloc.start()  # before the warm-up: the tables of the store's dicts are traced too
    try:
        await churn(store, "warm-up", BATCH, BATCH)
        gc.collect()
        before = tracemalloc.take_snapshot()
        await churn(store, "measured", 3_000, 500)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    only = [tracemalloc.Filter(True, PACKAGE)]
    diff = after.filter_traces(only).compare_to(before.filter_traces(only), "filename")
    grown = sum(stat.size_diff for stat in diff)
    # 0 here; a dict table resized differently would be 18 KB. The old store kept ~100 bytes
    # per deleted attachment (440 KB), and a growing table to index them.
    assert grown < 40_000, f"chatkit_stores holds {grown} more bytes after 3,500 deletes"
