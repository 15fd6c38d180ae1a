"""Orphaned attachments (uploaded, never sent in a message) are collected, bytes and metadata."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from chatkit.store import NotFoundError

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore
from chatkit_stores.cli import main
from chatkit_stores.testing import models
from conftest import TEST_PREFIX

SECRET = "s" * 32


@pytest.fixture(params=["memory", "sqlite", "postgres", "mysql"])
def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}")
    url = request.getfixturevalue(f"{request.param}_url")
    return SQLStore.from_url(url, table_prefix=TEST_PREFIX)


@pytest.mark.asyncio
async def test_orphans_are_deleted_and_attached_files_kept(metadata: Any, tmp_path: Path) -> None:
    disk = DiskAttachmentStore(metadata, tmp_path / "files", base_url="http://t", secret=SECRET)
    ctx = {"user_id": models.new_id("user")}
    thread = models.thread()
    orphan = await disk.upload(b"lost", name="a.txt", mime_type="text/plain", context=ctx)
    kept = await disk.upload(
        b"sent", name="b.txt", mime_type="text/plain", context=ctx, thread_id=thread.id
    )

    assert await disk.delete_orphans(older_than=timedelta(days=1)) == 0, "young uploads stay"
    assert await disk.read(orphan.id, ctx) == b"lost"

    await disk.delete_orphans(older_than=timedelta(0))
    with pytest.raises(NotFoundError):
        await metadata.load_attachment(orphan.id, ctx)
    with pytest.raises(NotFoundError):
        await disk.read(orphan.id, ctx)
    assert await disk.read(kept.id, ctx) == b"sent", "an attachment in a thread is never an orphan"
    assert (await metadata.load_attachment(kept.id, ctx)).thread_id == thread.id
    if isinstance(metadata, SQLStore):
        await metadata.close()


def test_orphans_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    ctx = {"user_id": "u"}

    async def upload() -> str:
        async with SQLStore.from_url(url) as store:
            disk = DiskAttachmentStore(
                store, tmp_path / "files", base_url="http://t", secret=SECRET
            )
            attachment = await disk.upload(b"x", name="x.txt", mime_type="text/plain", context=ctx)
            return attachment.id

    async def load(attachment_id: str) -> None:
        async with SQLStore.from_url(url) as store:
            await store.load_attachment(attachment_id, ctx)

    orphan_id = asyncio.run(upload())
    assert (
        main(["orphans", url, "--upload-dir", str(tmp_path / "files"), "--older-than", "0m"]) == 0
    )
    assert "deleted 1 orphaned" in capsys.readouterr().out
    with pytest.raises(NotFoundError):
        asyncio.run(load(orphan_id))
    assert not [p for p in (tmp_path / "files").rglob("*") if p.is_file()]


def test_bad_duration() -> None:
    with pytest.raises(SystemExit):
        main(["orphans", "sqlite:///x.db", "--upload-dir", "d", "--older-than", "soon"])
