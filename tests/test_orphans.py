"""Orphaned attachments (uploaded, never sent in a message) are collected, bytes and metadata."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from chatkit.types import FileAttachment

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore
from chatkit_stores.cli import main
from chatkit_stores.testing import models
from chatkit_stores.testing.interleave import instrument, interleavings

SECRET = "s" * 32


@pytest_asyncio.fixture(params=["memory", "sqlite", "postgres", "mysql"])
async def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A metadata store; SQL servers get tables of their own (the sweep sees every tenant)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        store = SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}")
        yield store
        await store.close()
        return
    url = request.getfixturevalue(f"{request.param}_url")
    store = SQLStore.from_url(url, table_prefix=f"orph{uuid.uuid4().hex[:8]}_")
    await store.create_schema()
    try:
        yield store
    finally:
        async with store.engine.begin() as conn:
            await conn.run_sync(store.tables.metadata.drop_all)
            await conn.exec_driver_sql(f"DROP TABLE {store.table_prefix}stores_alembic_version")
        await store.close()


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


@pytest.mark.asyncio
async def test_a_dry_run_lists_orphans_and_deletes_nothing(metadata: Any, tmp_path: Path) -> None:
    disk = DiskAttachmentStore(metadata, tmp_path / "files", base_url="http://t", secret=SECRET)
    ctx = {"user_id": models.new_id("user")}
    tenant = ctx["user_id"]
    orphan = await disk.upload(b"lost", name="a.txt", mime_type="text/plain", context=ctx)
    seen: list[tuple[str, str]] = []
    found = await disk.delete_orphans(
        timedelta(0), dry_run=True, on_orphan=lambda *key: seen.append(key)
    )
    assert (found, seen) == (1, [(tenant, orphan.id)])
    assert await disk.read(orphan.id, ctx) == b"lost", "nothing deleted"
    deleted: list[tuple[str, str]] = []
    assert await disk.delete_orphans(timedelta(0), on_orphan=lambda *key: deleted.append(key)) == 1
    assert deleted == [(tenant, orphan.id)]
    with pytest.raises(NotFoundError):
        await disk.read(orphan.id, ctx)


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


def test_orphans_command_dry_run_lists_then_the_sweep_lists_what_it_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    files = tmp_path / "files"
    alice, bob = {"user_id": "alice"}, {"user_id": "bob"}

    async def upload() -> list[str]:
        async with SQLStore.from_url(url) as store:
            disk = DiskAttachmentStore(store, files, base_url="http://t", secret=SECRET)
            sent = await disk.upload(b"s", name="s.txt", mime_type="text/plain", context=bob)
            await store.save_attachment(sent.model_copy(update={"thread_id": "thr_1"}), bob)
            return [
                (await disk.upload(b"x", name="x.txt", mime_type="text/plain", context=ctx)).id
                for ctx in (alice, bob)
            ]

    def stored() -> list[str]:
        return sorted(path.name for path in files.rglob("*") if path.is_file())

    orphans = asyncio.run(upload())
    before = stored()
    sweep = ["orphans", url, "--upload-dir", str(files), "--older-than", "0s"]
    assert main([*sweep, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"would delete attachment tenant='alice' id={orphans[0]!r}",
        f"would delete attachment tenant='bob' id={orphans[1]!r}",
        "would delete 2 orphaned attachments older than 0 seconds (dry run)",
    ]
    assert stored() == before and len(before) == 3, "a dry run deletes nothing"
    assert main(sweep) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines[:-1]) == [
        f"deleted attachment tenant='alice' id={orphans[0]!r}",
        f"deleted attachment tenant='bob' id={orphans[1]!r}",
    ]
    assert lines[-1] == "deleted 2 orphaned attachments older than 0 seconds"
    assert len(stored()) == 1, "the attachment in a thread stays"
    assert main([*sweep[:-1], "1s"]) == 0  # seconds are a unit too
    assert capsys.readouterr().out == "deleted 0 orphaned attachments older than 1 second\n"


def test_bad_duration() -> None:
    with pytest.raises(SystemExit):
        main(["orphans", "sqlite:///x.db", "--upload-dir", "d", "--older-than", "soon"])


def _disk(metadata: Any, tmp_path: Path) -> DiskAttachmentStore[Any]:
    return DiskAttachmentStore(metadata, tmp_path / "files", base_url="http://t", secret=SECRET)


def _file(path: Path, age: timedelta) -> Path:
    """Write a file at ``path`` last modified ``age`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"bytes")
    then = time.time() - age.total_seconds()
    os.utime(path, (then, then))
    return path


DAYS = timedelta(days=2)


@pytest.mark.asyncio
async def test_old_files_without_metadata_are_deleted(metadata: Any, tmp_path: Path) -> None:
    disk = _disk(metadata, tmp_path)
    ctx = {"user_id": models.new_id("user")}
    tenant = ctx["user_id"]
    kept = await disk.upload(b"kept", name="a.txt", mime_type="text/plain", context=ctx)
    _file(disk.path(tenant, kept.id), DAYS)  # old, but its metadata exists
    stray = _file(disk.path(tenant, "atc_gone"), DAYS)
    other_tenant = _file(disk.path(models.new_id("user"), "atc_gone"), DAYS)
    young = _file(disk.path(tenant, "atc_young"), timedelta(0))
    old_part = _file(stray.with_name(f".{stray.name}.{uuid.uuid4().hex}.part"), DAYS)
    young_part = _file(stray.with_name(f".{stray.name}.{uuid.uuid4().hex}.part"), timedelta(0))
    not_ours = [_file(disk.root / "README", DAYS), _file(stray.with_name("notes.txt"), DAYS)]

    assert await disk.delete_orphans(older_than=timedelta(hours=1)) == 2, "two strays, no orphan"
    assert not stray.exists() and not other_tenant.exists() and not old_part.exists()
    assert await disk.read(kept.id, ctx) == b"bytes", "a file with metadata is kept"
    assert young.exists() and young_part.exists(), "younger than upload_ttl: maybe uploading"
    assert all(path.exists() for path in not_ours), "only names this store makes are touched"
    assert await disk.delete_orphans(older_than=timedelta(hours=1)) == 0


@pytest.mark.asyncio
async def test_a_file_whose_metadata_lands_while_the_sweep_lists_is_kept(
    metadata: Any, tmp_path: Path
) -> None:
    """The tenant's files are listed, then its ids read again, before anything is deleted."""
    disk = _disk(metadata, tmp_path)
    ctx = {"user_id": models.new_id("user")}
    tenant = ctx["user_id"]
    known = await disk.upload(b"x", name="z.txt", mime_type="text/plain", context=ctx)

    async def setup() -> FileAttachment:
        # sorts before the known id: a keyset read resumed after it would miss it
        late = FileAttachment(id=f"atc_0{uuid.uuid4().hex}", name="a.txt", mime_type="text/plain")
        _file(disk.path(tenant, late.id), DAYS)
        return late

    async def sweep(_: FileAttachment) -> int:
        return await disk.delete_orphans(older_than=timedelta(hours=1))

    async def save(late: FileAttachment) -> None:
        await metadata.save_attachment(late, ctx)

    points: list[str | None] = []
    with instrument(metadata, "attachment_keys"):
        async for late, run in interleavings(setup, sweep, save):
            deleted, _ = run.results()
            assert deleted == 0, f"paused at {run.point} #{len(points)}"
            assert disk.path(tenant, late.id).exists(), f"paused at {run.point}"
            points.append(run.point)
    assert points.count("attachment_keys") >= 3, points
    assert await disk.read(known.id, ctx) == b"x"


class _ListingOnly:
    """A foreign store that lists orphans but cannot delete them conditionally."""

    async def orphaned_attachments(
        self, created_before: datetime, limit: int = 1000
    ) -> list[tuple[str, str]]:
        return [("t", "atc_1")]


class _Stubborn(_ListingOnly):
    """A foreign store whose delete_orphan never deletes what it lists."""

    async def delete_orphan(
        self, attachment_id: str, context: Any, created_before: datetime
    ) -> bool:
        return False


@pytest.mark.asyncio
async def test_foreign_stores_are_refused_rather_than_swept_unsafely(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="delete_orphan"):
        await _disk(_ListingOnly(), tmp_path).delete_orphans()
    with pytest.raises(RuntimeError, match="left orphans in place"):
        await _disk(_Stubborn(), tmp_path).delete_orphans()
