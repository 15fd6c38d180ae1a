"""DiskAttachmentStore through a real ChatKitServer and its ASGI app, on every metadata store."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore, UploadRejected
from chatkit_stores.demo import EchoServer, call
from chatkit_stores.files import base as files_base
from chatkit_stores.files.signing import Grant
from conftest import TEST_PREFIX

SECRET = "test-secret-" + "x" * 32
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)


@pytest_asyncio.fixture
async def disk(metadata_url: str, tmp_path: Path) -> AsyncIterator[DiskAttachmentStore[Any]]:
    store: Any = (
        MemoryStore()
        if metadata_url == "memory"
        else SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX)
    )
    yield DiskAttachmentStore(
        store,
        tmp_path / "files",
        base_url="http://test/files",
        secret=SECRET,
        max_bytes=64 * 1024,
        allowed_mime_types={"image/png", "application/pdf", "text/plain"},
    )
    if isinstance(store, SQLStore):
        await store.close()


@pytest_asyncio.fixture
async def client(disk: DiskAttachmentStore[Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client


def ctx(user: str = "alice") -> dict[str, str]:
    return {"user_id": user}


async def create(
    disk: DiskAttachmentStore[Any], name: str = "cat.png", mime: str = "image/png", size: int = 10
) -> dict[str, Any]:
    server = EchoServer(disk.store, disk)
    params = {"name": name, "size": size, "mime_type": mime}
    answer: dict[str, Any] = await call(
        server, {"type": "attachments.create", "params": params}, ctx()
    )
    return answer


def files_in(disk: DiskAttachmentStore[Any]) -> list[Path]:
    return [p for p in disk.root.rglob("*") if p.is_file()] if disk.root.exists() else []


@pytest.mark.asyncio
async def test_two_phase_upload_through_chatkit(
    disk: DiskAttachmentStore[Any], client: httpx.AsyncClient
) -> None:
    created = await create(disk)
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "POST"
    response = await client.post(descriptor["url"], files={"file": ("cat.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    stored = await disk.store.load_attachment(created["id"], ctx())
    assert stored.upload_descriptor is None, "an upload that arrived is marked done"

    server = EchoServer(disk.store, disk)
    user_input = {
        "content": [{"type": "input_text", "text": "look"}],
        "attachments": [created["id"]],
        "inference_options": {},
    }
    events = await call(server, {"type": "threads.create", "params": {"input": user_input}}, ctx())
    thread_id = events[0]["thread"]["id"]
    items = await disk.store.load_thread_items(thread_id, None, 10, "asc", ctx())
    preview = str(items.data[0].attachments[0].preview_url)  # type: ignore[union-attr]
    image = await client.get(preview)
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert image.headers["access-control-allow-origin"] == "*"
    assert await disk.read(created["id"], ctx()) == PNG

    await call(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, ctx())
    assert files_in(disk) == [], "deleting the thread deletes its attachments' bytes"
    with pytest.raises(NotFoundError):
        await disk.store.load_attachment(created["id"], ctx())


@pytest.mark.asyncio
async def test_put_upload_and_direct_upload(disk: DiskAttachmentStore[Any]) -> None:
    attachment = await disk.upload(
        b"hello", name="../../etc/passwd", mime_type="text/plain", context=ctx()
    )
    assert attachment.name == "passwd" and attachment.upload_descriptor is None
    assert await disk.store.load_attachment(attachment.id, ctx()) == attachment
    assert await disk.read(attachment.id, ctx()) == b"hello"
    for path in files_in(disk):
        assert disk.root in path.parents and "passwd" not in str(path)
    with pytest.raises(NotFoundError):
        await disk.read(attachment.id, ctx("mallory"))
    await disk.delete_attachment(attachment.id, ctx("mallory"))
    assert await disk.read(attachment.id, ctx()) == b"hello", "another tenant's delete does nothing"


class ThreadRecordingFile(io.BytesIO):
    """A blocking binary file that notes the thread and size of each ``read``."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int | None]] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append((threading.get_ident(), size))
        return super().read(size)


@pytest.mark.asyncio
async def test_direct_upload_of_synchronous_files(
    disk: DiskAttachmentStore[Any], tmp_path: Path
) -> None:
    """``io.BytesIO`` and ``open(path, "rb")`` upload like bytes, read off the event loop."""
    data = os.urandom(disk.max_bytes)  # several chunks of READ_CHUNK below
    kept = await disk.upload(
        io.BytesIO(b"hello"), name="a.txt", mime_type="text/plain", context=ctx()
    )
    assert await disk.read(kept.id, ctx()) == b"hello"
    source = tmp_path / "source.pdf"
    source.write_bytes(data)
    with source.open("rb") as handle:
        from_file = await disk.upload(
            handle, name="s.pdf", mime_type="application/pdf", context=ctx()
        )
    assert await disk.read(from_file.id, ctx()) == data
    assert await disk.store.load_attachment(from_file.id, ctx()) == from_file

    recording = ThreadRecordingFile(data)
    with patch.object(files_base, "READ_CHUNK", 4096):
        await disk.upload(recording, name="r.pdf", mime_type="application/pdf", context=ctx())
    loop_thread = threading.get_ident()
    assert len(recording.reads) == len(data) // 4096 + 1  # chunks, then the empty read
    assert all(size == 4096 for _, size in recording.reads), "read in chunks, never whole"
    assert loop_thread not in {thread for thread, _ in recording.reads}, "read in a worker"


@pytest.mark.asyncio
async def test_direct_upload_refuses_text_files_and_oversize_files(
    disk: DiskAttachmentStore[Any], tmp_path: Path
) -> None:
    """A text-mode file or one over the limit: a clear error, no bytes and no metadata kept."""
    user = ctx(f"sync-{uuid.uuid4().hex}")
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    with source.open() as text, pytest.raises(TypeError, match="binary mode, 'rb'"):
        await disk.upload(text, name="n.txt", mime_type="text/plain", context=user)
    with pytest.raises(TypeError, match="not str"):
        await disk.upload("hello", name="n.txt", mime_type="text/plain", context=user)  # type: ignore[arg-type]
    big = io.BytesIO(b"x" * (disk.max_bytes + 1))
    with pytest.raises(UploadRejected) as refused:
        await disk.upload(big, name="big.txt", mime_type="text/plain", context=user)
    assert refused.value.status == 413
    assert files_in(disk) == []
    keys = await disk.store.attachment_keys((user["user_id"], ""), limit=1)
    assert [key for key in keys if key[0] == user["user_id"]] == []


def tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.asyncio
async def test_signed_urls_refuse_tampering(
    disk: DiskAttachmentStore[Any], client: httpx.AsyncClient
) -> None:
    created = await create(disk)
    url = created["upload_descriptor"]["url"]
    body = {"file": ("cat.png", PNG, "image/png")}
    mallory = base64.urlsafe_b64encode(b"mallory").decode().rstrip("=")
    cases = {
        "tampered signature": tamper(url, s="A" * 43),
        "expired": url.split("?")[0]
        + "?"
        + disk.signer.query(Grant("POST", "alice", created["id"]), -10),
        "another tenant": tamper(url, t=mallory),
        "another attachment": url.replace(created["id"], "atc_" + "0" * 32),
        "no signature": url.split("?")[0],
    }
    for case, bad in cases.items():
        response = await client.post(bad, files=body)
        assert response.status_code == 403, f"{case}: {response.status_code} {response.text}"
    assert (await client.put(url, content=PNG)).status_code == 403, "a POST URL refuses PUT"
    their_own = (
        url.split("?")[0] + "?" + disk.signer.query(Grant("POST", "mallory", created["id"]), 60)
    )
    assert (await client.post(their_own, files=body)).status_code == 404, (
        "a tenant's valid URL cannot reach another tenant's attachment"
    )
    download = disk.download_url(created["id"], ctx())
    assert (await client.post(download, files=body)).status_code == 405
    assert files_in(disk) == [], "nothing is written by a refused upload"
    stored = await disk.store.load_attachment(created["id"], ctx())
    assert stored.upload_descriptor is not None, "a refused upload is never presented as done"


@pytest.mark.asyncio
async def test_limits(disk: DiskAttachmentStore[Any], client: httpx.AsyncClient) -> None:
    with pytest.raises(UploadRejected) as too_big:
        await create(disk, size=10**9)
    assert too_big.value.status == 413
    with pytest.raises(UploadRejected) as bad_type:
        await create(disk, name="x.html", mime="text/html")
    assert bad_type.value.status == 415

    created = await create(disk)
    url = created["upload_descriptor"]["url"]
    huge = b"x" * (disk.max_bytes + 1)
    response = await client.post(url, files={"file": ("cat.png", huge, "image/png")})
    assert response.status_code == 413
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + huge
        + f"\r\n--{boundary}--\r\n".encode()
    )
    lying = await client.post(
        url,
        content=_stream(body),
        headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "content-length": "100",
        },
    )
    assert lying.status_code == 413, "the bytes are counted, whatever Content-Length says"
    assert files_in(disk) == [], "a rejected upload leaves no file, temporary or final"
    with pytest.raises(UploadRejected):
        await disk.upload(huge, name="big.pdf", mime_type="application/pdf", context=ctx())
    assert files_in(disk) == []


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 8192):
        yield data[start : start + 8192]


@pytest.mark.asyncio
async def test_download_headers_are_safe(
    disk: DiskAttachmentStore[Any], client: httpx.AsyncClient
) -> None:
    name = 'evil"; filename="x.html\r\nSet-Cookie: a=b\u202etxt.pdf'
    attachment = await disk.upload(
        b"%PDF-1.4", name=name, mime_type="application/pdf", context=ctx()
    )
    response = await client.get(disk.download_url(attachment.id, ctx()))
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "\r" not in disposition
    assert "set-cookie" not in response.headers
    assert disposition.count('"') == 2, disposition


def test_missing_secret_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATKIT_STORES_SECRET", raising=False)
    with pytest.raises(ValueError, match="CHATKIT_STORES_SECRET"):
        DiskAttachmentStore(MemoryStore(), tmp_path, base_url="http://x")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        DiskAttachmentStore(MemoryStore(), tmp_path, base_url="http://x", secret="short")


@pytest.mark.asyncio
async def test_upload_type_is_checked_at_upload_too(
    disk: DiskAttachmentStore[Any], client: httpx.AsyncClient
) -> None:
    created = await create(disk)
    url = created["upload_descriptor"]["url"]
    response = await client.post(url, files={"file": ("x.html", b"<script>", "text/html")})
    assert response.status_code == 415
    assert files_in(disk) == []
    stored = await disk.store.load_attachment(created["id"], ctx())
    assert stored.upload_descriptor is not None


@pytest.mark.asyncio
async def test_a_slow_upload_does_not_stall_other_requests(
    disk: DiskAttachmentStore[Any], client: httpx.AsyncClient
) -> None:
    ready = await disk.upload(b"%PDF", name="a.pdf", mime_type="application/pdf", context=ctx())
    created = await create(disk)
    started, release = asyncio.Event(), asyncio.Event()
    boundary = "slowb0undary"

    async def slow_body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode() + PNG[:100]
        started.set()
        await release.wait()  # the client is slow: the upload stays open
        yield PNG[100:] + f"\r\n--{boundary}--\r\n".encode()

    upload = asyncio.create_task(
        client.post(
            created["upload_descriptor"]["url"],
            content=slow_body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    )
    await started.wait()
    download = await client.get(disk.download_url(ready.id, ctx()))
    assert download.status_code == 200 and download.content == b"%PDF", (
        "a download is served while another upload is still streaming"
    )
    assert not upload.done()
    release.set()
    assert (await upload).status_code == 200
    assert await disk.read(created["id"], ctx()) == PNG
