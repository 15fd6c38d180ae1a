"""Uploads, deletes and the orphan sweep overlapping: each pair has one documented winner.

Each test pauses one side at every await point in turn (store calls, the disk store's file
steps, chunks of the upload body) and runs the other side to completion there, in both orders
where both orders matter; see ``chatkit_stores.testing.interleave``. Real metadata stores, real
files, uploads through the mounted ASGI app as the ChatKit client sends them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore
from chatkit_stores.demo import EchoServer, call
from chatkit_stores.testing import models
from chatkit_stores.testing.interleave import Interleaving, checkpoint, instrument, interleavings
from conftest import TEST_PREFIX

SECRET = "race-secret-" + "x" * 32
BOUNDARY = "r4ce-b0undary"
CHUNKS = 3
STORE_CALLS = (
    "load_attachment",
    "save_attachment",
    "update_attachment",
    "delete_attachment",
    "delete_orphan",
    "orphaned_attachments",
    "attachment_keys",
    "delete_thread",
)
FILE_STEPS = ("_write", "_commit", "_delete", "_has_bytes", "_delete_strays")


@dataclass
class World:
    """A metadata store, a disk store linked to it, the ChatKit server and an HTTP client."""

    store: Any
    disk: DiskAttachmentStore[Any]
    server: EchoServer
    client: httpx.AsyncClient
    ctx: dict[str, str]

    def files(self, attachment_id: str) -> list[str]:
        """The names of an attachment's files, temporary ones included."""
        path = self.disk.path(self.ctx["user_id"], attachment_id)
        if not path.parent.exists():
            return []
        return sorted(p.name for p in path.parent.iterdir() if path.name in p.name)

    async def create(self, thread_id: str | None = None) -> tuple[str, str]:
        """A two-phase attachment through ChatKit (in ``thread_id`` if given); id, upload URL."""
        params = {"name": "notes.txt", "size": 30, "mime_type": "text/plain"}
        created = await call(
            self.server, {"type": "attachments.create", "params": params}, self.ctx
        )
        if thread_id is not None:
            attachment = await self.store.load_attachment(created["id"], self.ctx)
            attachment.thread_id = thread_id
            await self.store.save_attachment(attachment, self.ctx)
        return created["id"], created["upload_descriptor"]["url"]

    async def upload(self, url: str, data: bytes) -> int:
        """POST ``data`` as the ``file`` field, in chunks that are await points; the status."""
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        response = await self.client.post(url, content=_multipart(data), headers=headers)
        return response.status_code

    async def attachment(self, attachment_id: str) -> Any:
        """The stored metadata, or None."""
        try:
            return await self.store.load_attachment(attachment_id, self.ctx)
        except NotFoundError:
            return None

    @contextmanager
    def await_points(self) -> Iterator[None]:
        """Make the store calls and the disk store's file steps await points."""
        with ExitStack() as stack:
            stack.enter_context(instrument(self.store, *_present(self.store, STORE_CALLS)))
            stack.enter_context(instrument(self.disk, *_present(self.disk, FILE_STEPS)))
            yield


def _present(target: object, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if hasattr(target, name)]


async def _multipart(data: bytes) -> AsyncIterator[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    )
    yield head.encode()
    step = -(-len(data) // CHUNKS)
    for start in range(0, len(data), step):
        await checkpoint("chunk")
        yield data[start : start + step]
    await checkpoint("chunk")
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest_asyncio.fixture
async def world(metadata_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """A fresh world per test; SQL servers get tables of their own (the sweep sees all rows)."""
    if metadata_url == "memory":
        store: Any = MemoryStore()
    elif metadata_url.startswith("sqlite"):
        store = SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX)
    else:
        store = SQLStore.from_url(metadata_url, table_prefix=f"race{uuid.uuid4().hex[:8]}_")
        await store.create_schema()
    disk = DiskAttachmentStore(
        store, tmp_path / "files", base_url="http://test/files", secret=SECRET
    )
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ctx = {"user_id": models.new_id("user")}
            yield World(store, disk, EchoServer(store, disk), client, ctx)
    finally:
        if isinstance(store, SQLStore):
            if not metadata_url.startswith("sqlite"):
                async with store.engine.begin() as conn:
                    await conn.run_sync(store.tables.metadata.drop_all)
                    await conn.exec_driver_sql(
                        f"DROP TABLE {store.table_prefix}stores_alembic_version"
                    )
            await store.close()


async def both_orders(
    setup: Callable[[], Awaitable[Any]],
    one: Callable[[Any], Awaitable[Any]],
    other: Callable[[Any], Awaitable[Any]],
    check: Callable[[Any, Any, Any, bool], Awaitable[None]],
) -> set[str]:
    """Run ``one`` paused at each await point with ``other`` in between, then the reverse.

    ``check(state, one's result, other's result, one_paused)`` judges each run. Returns the
    labels of the points where ``one`` was paused.
    """
    points: set[str] = set()
    for one_first in (True, False):
        first, second = (one, other) if one_first else (other, one)
        async for state, run in interleavings(setup, first, second):
            assert not run.blocked, f"paused at {run.point}: nothing should wait for a lock"
            a, b = run.results() if one_first else run.results()[::-1]
            try:
                await check(state, a, b, one_first)
            except AssertionError as error:
                paused = (one if one_first else other).__name__
                raise AssertionError(f"{paused} paused at {run.point}: {error}") from None
            if one_first:
                points.add(str(run.point))
    return points


def _where(run: Interleaving) -> str:
    return f"first paused at {run.point}"


A, B = b"A" * 3000, b"B" * 3000


async def test_two_uploads_to_one_url_exactly_one_wins(world: World) -> None:
    async def setup() -> tuple[str, str]:
        return await world.create()

    async def first(state: tuple[str, str]) -> int:
        return await world.upload(state[1], A)

    async def second(state: tuple[str, str]) -> int:
        return await world.upload(state[1], B)

    points: set[str] = set()
    with world.await_points():
        async for (attachment_id, _), run in interleavings(setup, first, second):
            where, key = _where(run), (world.ctx["user_id"], attachment_id)
            statuses = run.results()
            assert sorted(statuses) == [200, 409], f"{where}: {statuses}"
            winner = A if statuses[0] == 200 else B
            assert await world.disk.read(attachment_id, world.ctx) == winner, where
            stored = await world.attachment(attachment_id)
            assert stored is not None and stored.upload_descriptor is None, where
            files = world.files(attachment_id)
            assert files == [world.disk.path(*key).name], (
                f"{where}: one file, no temporary: {files}"
            )
            await world.disk.delete_bytes(world.ctx["user_id"], [attachment_id])
            points.add(str(run.point))
    assert {"load_attachment", "chunk", "_commit", "update_attachment"} <= points, points


async def test_an_attachment_deleted_during_its_upload_stays_deleted(world: World) -> None:
    async def upload(state: tuple[str, str]) -> int:
        return await world.upload(state[1], A)

    async def delete(state: tuple[str, str]) -> None:
        params = {"attachment_id": state[0]}
        await call(world.server, {"type": "attachments.delete", "params": params}, world.ctx)

    async def check(state: tuple[str, str], status: int, _: None, upload_paused: bool) -> None:
        assert await world.attachment(state[0]) is None, "the delete wins: no metadata"
        assert world.files(state[0]) == [], "the delete wins: no file, temporary or final"
        if upload_paused:  # the delete ran to completion before the upload finished
            assert status in (404, 410), status
        else:
            assert status in (200, 404, 410), status

    with world.await_points():
        points = await both_orders(world.create, upload, delete, check)
    assert {"load_attachment", "chunk", "_commit", "update_attachment"} <= points, points


async def test_a_thread_deleted_during_an_upload_of_its_attachment_stays_deleted(
    world: World,
) -> None:
    async def setup() -> tuple[str, str, str]:
        thread = models.thread()
        await world.store.save_thread(thread, world.ctx)
        return (thread.id, *await world.create(thread.id))

    async def upload(state: tuple[str, str, str]) -> int:
        return await world.upload(state[2], A)

    async def delete(state: tuple[str, str, str]) -> None:
        params = {"thread_id": state[0]}
        await call(world.server, {"type": "threads.delete", "params": params}, world.ctx)

    async def check(state: tuple[str, str, str], status: int, _: None, upload_paused: bool) -> None:
        with pytest.raises(NotFoundError):
            await world.store.load_thread(state[0], world.ctx)
        assert await world.attachment(state[1]) is None, "the delete wins: no metadata"
        assert world.files(state[1]) == [], "the delete wins: no file, temporary or final"
        assert status in ((404, 410) if upload_paused else (200, 404, 410)), status

    with world.await_points():
        points = await both_orders(setup, upload, delete, check)
    assert {"load_attachment", "chunk", "_commit", "update_attachment"} <= points, points


async def test_the_sweep_keeps_an_orphan_sent_in_a_message_meanwhile(world: World) -> None:
    async def setup() -> str:
        upload = await world.disk.upload(
            b"orphan?", name="o.txt", mime_type="text/plain", context=world.ctx
        )
        return upload.id

    async def sweep(_: str) -> int:
        return await world.disk.delete_orphans(older_than=timedelta(seconds=-60))

    async def send(attachment_id: str) -> bool:
        user_input = {
            "content": [{"type": "input_text", "text": "see attached"}],
            "attachments": [attachment_id],
            "inference_options": {},
        }
        request = {"type": "threads.create", "params": {"input": user_input}}
        try:
            await call(world.server, request, world.ctx)
        except NotFoundError:
            return False
        return True

    points: set[str] = set()
    with world.await_points():
        async for attachment_id, run in interleavings(setup, sweep, send):
            where = _where(run)
            deleted, sent = run.results()
            stored = await world.attachment(attachment_id)
            if sent:  # sent before the sweep deleted it: kept, bytes and all
                assert deleted == 0, f"{where}: the sweep counted {deleted}"
                assert stored is not None and stored.thread_id is not None, where
                assert await world.disk.read(attachment_id, world.ctx) == b"orphan?", where
            else:  # deleted before the send loaded it: gone, bytes and all
                assert deleted == 1, f"{where}: the sweep counted {deleted}"
                assert stored is None, where
                assert world.files(attachment_id) == [], where
            points.add(str(run.point))
    assert {"orphaned_attachments", "delete_orphan", "_delete"} <= points, points


async def test_loading_a_finished_upload_never_brings_a_deleted_attachment_back(
    world: World,
) -> None:
    """Loading completes a pending upload whose bytes arrived; a delete meanwhile still wins."""

    async def setup() -> tuple[str, str]:
        attachment_id, url = await world.create()
        # the bytes arrived, the metadata is not marked yet (as an upload interrupted between
        # its two steps, or an S3 presigned PUT, leaves it)
        await world.disk._write(world.ctx["user_id"], attachment_id, "text/plain", _chunks(A))
        return attachment_id, url

    async def load(state: tuple[str, str]) -> None:
        await world.attachment(state[0])

    async def delete(state: tuple[str, str]) -> None:
        params = {"attachment_id": state[0]}
        await call(world.server, {"type": "attachments.delete", "params": params}, world.ctx)

    async def check(state: tuple[str, str], _: None, __: None, load_paused: bool) -> None:
        assert await world.attachment(state[0]) is None, "the delete wins: no metadata"
        assert world.files(state[0]) == [], "the delete wins: no file"

    with world.await_points():
        points = await both_orders(setup, load, delete, check)
    assert {"_has_bytes", "update_attachment"} <= points, points


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
