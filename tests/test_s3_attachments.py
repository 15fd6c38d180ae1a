"""S3AttachmentStore on a real S3 server (moto, or CHATKIT_STORES_S3_ENDPOINT), on every metadata
store: presigned two-phase uploads through a ChatKitServer, multipart direct uploads, limits,
aborts, tenant isolation and preview URLs re-signed on load.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams, ImageAttachment
from pydantic import AnyUrl

from chatkit_stores import MemoryStore, S3AttachmentStore, SQLStore, UploadRejected
from chatkit_stores.demo import EchoServer, call
from conftest import TEST_PREFIX, bucket_keys, open_uploads

MIB = 1024 * 1024
PART = 5 * MIB
PREFIX = "chatkit/"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
KEY = re.compile(rf"^{PREFIX}t_[0-9a-f]{{64}}/a_[0-9a-f]{{64}}$")


class Spy:
    """A boto3 client that records each call's name and whether it ran off the event loop."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, bool]] = []
        self.hold: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.hold_only: dict[str, dict[str, Any]] = {}
        """Hold a call named here only when its arguments include these."""

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.current_thread() is not threading.main_thread()))
            only = self.hold_only.get(name, {})
            if name in self.hold and all(kwargs.get(k) == v for k, v in only.items()):
                entered, release = self.hold.pop(name)
                entered.set()
                release.wait(30)
            return attribute(*args, **kwargs)

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def blocking(self) -> list[str]:
        """Calls that ran on the event loop's thread (presigning is local and allowed)."""
        return [n for n, off_loop in self.calls if not off_loop and n != "generate_presigned_url"]


@pytest_asyncio.fixture
async def s3(
    metadata_url: str, s3_client: Any, bucket: str
) -> AsyncIterator[S3AttachmentStore[Any]]:
    store: Any = (
        MemoryStore()
        if metadata_url == "memory"
        else SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX)
    )
    yield S3AttachmentStore(
        store,
        bucket,
        prefix=PREFIX,
        client=Spy(s3_client),
        max_bytes=64 * 1024,
        allowed_mime_types={"image/png", "application/pdf", "text/plain"},
        part_size=PART,
    )
    if isinstance(store, SQLStore):
        await store.close()


def spy(s3: S3AttachmentStore[Any]) -> Spy:
    client = s3._client
    assert isinstance(client, Spy)
    return client


def keys(client: Any, bucket: str) -> list[str]:
    return bucket_keys(client, bucket, PREFIX)


def ctx(user: str = "alice") -> dict[str, str]:
    return {"user_id": user}


async def create(
    s3: S3AttachmentStore[Any],
    name: str = "cat.png",
    mime: str = "image/png",
    size: int = 10,
    user: str = "alice",
) -> dict[str, Any]:
    params = {"name": name, "size": size, "mime_type": mime}
    request = {"type": "attachments.create", "params": params}
    answer: dict[str, Any] = await call(EchoServer(s3.store, s3), request, ctx(user))
    return answer


async def delete(s3: S3AttachmentStore[Any], attachment_id: str, user: str = "alice") -> None:
    """``attachments.delete`` through ChatKit: the bytes, then the metadata."""
    request = {"type": "attachments.delete", "params": {"attachment_id": attachment_id}}
    await call(EchoServer(s3.store, s3), request, ctx(user))


async def put(created: dict[str, Any], body: bytes) -> int:
    """PUT ``body`` to a created attachment's upload URL, as a client would; the status."""
    descriptor = created["upload_descriptor"]
    async with httpx.AsyncClient() as http:
        response = await http.put(descriptor["url"], content=body, headers=descriptor["headers"])
    return response.status_code


async def pieces(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def signed_headers(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"][0].split(";")


def expires(url: str | AnyUrl | None) -> int:
    return int(parse_qs(urlsplit(str(url)).query)["X-Amz-Expires"][0])


@pytest.mark.asyncio
async def test_two_phase_upload_through_chatkit(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    created = await create(s3, size=len(PNG))
    descriptor = created["upload_descriptor"]
    assert descriptor["method"] == "PUT"
    assert descriptor["headers"] == {"Content-Type": "image/png"}
    assert "content-type" in signed_headers(descriptor["url"]), "the type is in the signature"
    async with httpx.AsyncClient() as http:
        put = await http.put(descriptor["url"], content=PNG, headers=descriptor["headers"])
        assert put.status_code == 200, put.text

        server = EchoServer(s3.store, s3)
        user_input = {
            "content": [{"type": "input_text", "text": "look"}],
            "attachments": [created["id"]],
            "inference_options": {},
        }
        request = {"type": "threads.create", "params": {"input": user_input}}
        events = await call(server, request, ctx())
        thread_id = events[0]["thread"]["id"]
        stored = await s3.store.load_attachment(created["id"], ctx())
        assert stored.upload_descriptor is None, "the upload that arrived is marked done"
        assert stored.thread_id == thread_id

        items = await s3.store.load_thread_items(thread_id, None, 10, "asc", ctx())
        attachment = items.data[0].attachments[0]  # type: ignore[union-attr]
        assert isinstance(attachment, ImageAttachment) and attachment.upload_descriptor is None
        image = await http.get(str(attachment.preview_url))
        assert image.status_code == 200 and image.content == PNG
        assert image.headers["content-type"] == "image/png"
        assert image.headers["content-disposition"] == "inline"
        assert await s3.read(created["id"], ctx()) == PNG

        request = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        await call(server, request, ctx())
    assert keys(s3_client, bucket) == [], "deleting the thread deletes its attachments' bytes"
    with pytest.raises(NotFoundError):
        await s3.store.load_attachment(created["id"], ctx())
    assert spy(s3).blocking() == [], "every S3 request ran in a worker thread"


@pytest.mark.asyncio
async def test_upload_with_another_content_type_is_refused(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    script = b"<script>alert(1)</script>"
    created = await create(s3, size=len(script))
    url = created["upload_descriptor"]["url"]
    async with httpx.AsyncClient() as http:
        for headers in ({"Content-Type": "text/html"}, {}):
            refused = await http.put(url, content=script, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
        assert (await http.get(url)).status_code == 403, "a PUT URL does not download"
    assert keys(s3_client, bucket) == []
    stored = await s3.store.load_attachment(created["id"], ctx())
    assert stored.upload_descriptor is not None, "a refused upload is never presented as done"


@pytest.mark.asyncio
async def test_upload_of_another_size_than_declared_is_refused(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    created = await create(s3, name="notes.txt", mime="text/plain", size=5)
    descriptor = created["upload_descriptor"]
    url, headers = descriptor["url"], descriptor["headers"]
    assert "content-length" in signed_headers(url), "the declared size is in the signature"
    assert headers == {"Content-Type": "text/plain"}, "clients send Content-Length themselves"
    async with httpx.AsyncClient() as http:
        for body in (b"", b"four", b"sixsix", b"x" * s3.max_bytes):
            refused = await http.put(url, content=body, headers=headers)
            assert refused.status_code == 403, (len(body), refused.text)
            assert "SignatureDoesNotMatch" in refused.text
        assert keys(s3_client, bucket) == [], "nothing of another size is stored"
        put = await http.put(url, content=b"hello", headers=headers)
        assert put.status_code == 200, put.text
    head = s3_client.head_object(Bucket=bucket, Key=s3.key(s3.tenant_of(ctx()), created["id"]))
    assert head["ContentLength"] == 5
    stored = await s3.store.load_attachment(created["id"], ctx())
    assert stored.upload_descriptor is None, "the upload of the declared size is done"


@pytest.mark.asyncio
async def test_missing_or_oversized_uploads_are_not_presented_as_uploaded(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    pending = await create(s3, name="never.pdf", mime="application/pdf")
    for _ in range(2):
        stored = await s3.store.load_attachment(pending["id"], ctx())
        assert stored.upload_descriptor is not None, "an upload that never came stays pending"

    with pytest.raises(UploadRejected) as declared_too_big:
        await create(s3, size=s3.max_bytes + 1)
    assert declared_too_big.value.status == 413

    lying = await create(s3)  # declares 10 bytes, then sends more than max_bytes
    descriptor = lying["upload_descriptor"]
    huge = b"x" * (s3.max_bytes + 1)
    async with httpx.AsyncClient() as http:
        put = await http.put(descriptor["url"], content=huge, headers=descriptor["headers"])
    assert put.status_code == 403, "the declared size is signed: S3 refuses any other"
    assert keys(s3_client, bucket) == []
    # An S3-compatible server that ignores signed headers would take it: the HEAD still checks.
    s3_client.put_object(Bucket=bucket, Key=s3.key(s3.tenant_of(ctx()), lying["id"]), Body=huge)
    stored = await s3.store.load_attachment(lying["id"], ctx())
    assert stored.upload_descriptor is not None, "an object over max_bytes is not an upload"
    assert keys(s3_client, bucket) == [], "and it is deleted"
    with pytest.raises(NotFoundError):
        await s3.read(lying["id"], ctx())


@pytest.mark.asyncio
async def test_direct_uploads_stream_in_parts(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    small = await s3.upload(b"hello", name="hi.txt", mime_type="text/plain", context=ctx())
    assert await s3.read(small.id, ctx()) == b"hello"
    assert "put_object" in spy(s3).names() and "create_multipart_upload" not in spy(s3).names()

    s3.max_bytes = 16 * MIB
    data = os.urandom(3 * PART)
    big = await s3.upload(pieces(data), name="big.pdf", mime_type="application/pdf", context=ctx())
    assert big.upload_descriptor is None
    assert spy(s3).names().count("upload_part") == 3
    assert await s3.read(big.id, ctx()) == data
    chunks = [len(chunk) async for chunk in s3.open(big.id, ctx())]
    assert max(chunks) <= MIB, "reads stream in bounded chunks"
    head = s3_client.head_object(Bucket=bucket, Key=s3.key("alice", big.id))
    assert head["ContentType"] == "application/pdf" and head["ContentLength"] == len(data)
    assert open_uploads(s3_client, bucket) == []

    await s3.delete_bytes("alice", [small.id, big.id, "atc_missing"])
    assert "delete_objects" in spy(s3).names()
    assert keys(s3_client, bucket) == [], "a batch delete removes them, missing ones are fine"
    assert spy(s3).blocking() == []


@pytest.mark.asyncio
async def test_failed_direct_uploads_leave_nothing(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    s3.max_bytes = 12 * MIB
    with pytest.raises(UploadRejected) as too_big:
        await s3.upload(
            pieces(b"x" * (13 * MIB)), name="big.pdf", mime_type="application/pdf", context=ctx()
        )
    assert too_big.value.status == 413
    assert spy(s3).names().count("upload_part") == 2, "two parts were up when the limit broke"
    assert "abort_multipart_upload" in spy(s3).names()
    assert keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []

    async def broken() -> AsyncIterator[bytes]:
        yield b"y" * (PART + 1)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        await s3.upload(broken(), name="b.pdf", mime_type="application/pdf", context=ctx())
    assert spy(s3).names().count("abort_multipart_upload") == 2
    assert keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []

    # Cancelled while a part is being sent: the part's request cannot be stopped, so the
    # abort waits for it, and the part never outlives the upload.
    entered, release = threading.Event(), threading.Event()
    spy(s3).hold["upload_part"] = (entered, release)
    task = asyncio.ensure_future(
        s3.upload(
            pieces(b"z" * (PART + 1)), name="c.pdf", mime_type="application/pdf", context=ctx()
        )
    )
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert spy(s3).names().count("abort_multipart_upload") == 3
    assert keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []
    with pytest.raises(NotFoundError):
        await s3.read("atc_" + "0" * 32, ctx())


@pytest.mark.asyncio
async def test_tenants_are_isolated_whatever_their_ids(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    attachment = await s3.upload(
        b"secret", name="../../etc/passwd", mime_type="text/plain", context=ctx()
    )
    assert attachment.name == "passwd"
    with pytest.raises(NotFoundError):
        await s3.read(attachment.id, ctx("mallory"))
    await s3.delete_attachment(attachment.id, ctx("mallory"))
    assert await s3.read(attachment.id, ctx()) == b"secret", "another tenant's delete does nothing"

    hostile = ["../alice", "alice/..", "/", "..", "a/../../b", "\U0001d518" * 255, "é" * 255]
    for tenant in hostile:
        mine = await s3.upload(
            tenant.encode(), name=tenant, mime_type="text/plain", context=ctx(tenant)
        )
        assert await s3.read(mine.id, ctx(tenant)) == tenant.encode()
        with pytest.raises(NotFoundError):
            await s3.read(mine.id, ctx())
    await s3.delete_attachment("../" + attachment.id, ctx())
    await s3.delete_attachment("/" + attachment.id, ctx("alice/.."))
    stored = bucket_keys(s3_client, bucket)
    assert len(stored) == 1 + len(hostile), "nothing was deleted by hostile ids"
    for key in stored:
        assert KEY.match(key), key
        assert ".." not in key and "alice" not in key and len(key.encode()) <= 1024
    assert s3.key("a", "b/c") != s3.key("a/b", "c")
    assert s3.key("alice", attachment.id).startswith(s3.tenant_prefix("alice"))
    await s3.delete_attachment(attachment.id, ctx())
    with pytest.raises(NotFoundError):
        await s3.read(attachment.id, ctx())


@pytest.mark.asyncio
async def test_preview_urls_are_signed_again_on_every_load(
    s3: S3AttachmentStore[Any], s3_client: Any
) -> None:
    uploaded = await s3.upload(PNG, name="cat.png", mime_type="image/png", context=ctx())
    assert isinstance(uploaded, ImageAttachment) and expires(uploaded.preview_url) == 3600

    stale = uploaded.model_copy(update={"preview_url": AnyUrl("https://stale.invalid/cat.png")})
    await s3.store.save_attachment(stale, ctx())
    loaded = await s3.store.load_attachment(uploaded.id, ctx())
    assert isinstance(loaded, ImageAttachment) and loaded.preview_url != stale.preview_url
    async with httpx.AsyncClient() as http:
        assert (await http.get(str(loaded.preview_url))).content == PNG

    server = EchoServer(s3.store, s3)
    user_input = {
        "content": [{"type": "input_text", "text": "look"}],
        "attachments": [uploaded.id],
        "inference_options": {},
    }
    events = await call(server, {"type": "threads.create", "params": {"input": user_input}}, ctx())
    s3.preview_ttl = 60
    again = await s3.store.load_attachment(uploaded.id, ctx())
    assert isinstance(again, ImageAttachment) and expires(again.preview_url) == 60
    items = await s3.store.load_thread_items(events[0]["thread"]["id"], None, 10, "asc", ctx())
    in_message = items.data[0].attachments[0]  # type: ignore[union-attr]
    assert isinstance(in_message, ImageAttachment) and expires(in_message.preview_url) == 60
    async with httpx.AsyncClient() as http:
        assert (await http.get(str(in_message.preview_url))).content == PNG
        download = await http.get(s3.download_url(uploaded.id, ctx()))
    assert download.content == PNG and download.headers["content-disposition"] == "attachment"


@pytest.mark.asyncio
async def test_client_is_made_lazily_from_the_credential_chain(
    s3_endpoint: str, bucket: str, s3_env_credentials: dict[str, str]
) -> None:
    credentials = s3_env_credentials
    unreachable = S3AttachmentStore(MemoryStore(), bucket, endpoint_url="http://127.0.0.1:9")
    assert unreachable._client is None, "the constructor does no I/O"
    s3 = S3AttachmentStore(
        MemoryStore(), bucket, endpoint_url=s3_endpoint, region_name=credentials["region_name"]
    )
    params = AttachmentCreateParams(name="a.txt", size=3, mime_type="text/plain")
    created = await s3.create_attachment(params, ctx())
    assert created.upload_descriptor is not None
    assert "X-Amz-Signature=" in str(created.upload_descriptor.url), "SigV4 presigned URLs"
    attachment = await s3.upload(b"abc", name="a.txt", mime_type="text/plain", context=ctx())
    assert await s3.read(attachment.id, ctx()) == b"abc"


def test_works_without_boto3_until_a_store_is_built() -> None:
    script = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "import chatkit_stores.files\n"
        "from chatkit_stores import MemoryStore, S3AttachmentStore\n"
        "try:\n"
        "    S3AttachmentStore(MemoryStore(), 'bucket')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "pip install 'chatkit-stores[s3]'" in result.stdout


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3AttachmentStore(MemoryStore(), "bucket", client=object(), part_size=MIB)
    with pytest.raises(ValueError, match="upload_ttl"):
        S3AttachmentStore(MemoryStore(), "bucket", client=object(), upload_ttl=8 * 24 * 3600)


@pytest.mark.asyncio
async def test_bytes_put_after_a_delete_are_swept(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatkit_stores.files.base.KEYS_PAGE", 2)  # tenants span pages
    alice, bob, carol = (s3.tenant_of(ctx(user)) for user in ("alice", "bob", "carol"))
    deleted = await create(s3, size=len(PNG))
    await delete(s3, deleted["id"])
    with pytest.raises(NotFoundError):
        await s3.store.load_attachment(deleted["id"], ctx())
    assert await put(deleted, PNG) == 200, "the URL outlives the attachment"
    pending = await create(s3, size=len(PNG))  # its bytes came, nothing loaded it since
    assert await put(pending, PNG) == 200
    sent = [
        await s3.upload(b"%d" % n, name="s.txt", mime_type="text/plain", context=ctx())
        for n in range(3)
    ]
    user_input = {"content": [], "attachments": [sent[0].id], "inference_options": {}}
    request = {"type": "threads.create", "params": {"input": user_input}}
    await call(EchoServer(s3.store, s3), request, ctx())
    bobs = await s3.upload(b"bob", name="b.txt", mime_type="text/plain", context=ctx("bob"))
    carols = await create(s3, size=len(PNG), user="carol")  # carol keeps no attachment at all
    await delete(s3, carols["id"], "carol")
    assert await put(carols, PNG) == 200
    foreign = [PREFIX + "notes.txt", s3.tenant_prefix(alice) + "notes.txt", "elsewhere/x"]
    for key in foreign:  # not shaped like this store's keys: not ours to delete
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    strays = {s3.key(alice, deleted["id"]), s3.key(carol, carols["id"])}
    kept = {s3.key(alice, pending["id"]), s3.key(bob, bobs.id)}
    kept |= {s3.key(alice, a.id) for a in sent}
    assert set(bucket_keys(s3_client, bucket)) == strays | kept | set(foreign)

    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert await s3._delete_strays(datetime.now(timezone.utc) - timedelta(days=1)) == 0
    assert await s3._delete_strays(later) == 0, "written within upload_ttl: may be in flight"
    s3.upload_ttl = 0  # as if every upload URL had expired and every upload ended
    assert await s3._delete_strays(later) == 2
    assert set(bucket_keys(s3_client, bucket)) == kept | set(foreign)
    assert "delete_objects" in spy(s3).names() and spy(s3).blocking() == []
    loaded = await s3.store.load_attachment(pending["id"], ctx())
    assert loaded.upload_descriptor is None and await s3.read(pending["id"], ctx()) == PNG
    assert await s3.read(bobs.id, ctx("bob")) == b"bob"
    assert await s3._delete_strays(later) == 0, "nothing left to sweep"


@pytest.mark.asyncio
async def test_bytes_whose_metadata_lands_while_the_sweep_lists_are_kept(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    tenant = s3.tenant_of(ctx())
    await s3.upload(b"first", name="a.txt", mime_type="text/plain", context=ctx())
    # A direct upload whose bytes are written and whose metadata is saved only while the
    # sweep lists the tenant's objects (after it read the tenant's attachments).
    late = await s3.upload(b"late", name="b.txt", mime_type="text/plain", context=ctx())
    await s3.store.delete_attachment(late.id, ctx())
    s3_client.put_object(Bucket=bucket, Key=s3.key(tenant, late.id), Body=b"late")
    entered, release = threading.Event(), threading.Event()
    spy(s3).hold["list_objects_v2"] = (entered, release)
    spy(s3).hold_only["list_objects_v2"] = {"Prefix": s3.tenant_prefix(tenant)}
    s3.upload_ttl = 0
    sweep = asyncio.ensure_future(s3._delete_strays(datetime.now(timezone.utc) + timedelta(1)))
    assert await asyncio.to_thread(entered.wait, 10)
    await s3.store.save_attachment(late, ctx())
    release.set()
    assert await sweep == 0
    assert await s3.read(late.id, ctx()) == b"late"


@pytest.mark.asyncio
async def test_the_orphan_sweep_deletes_strays(
    s3: S3AttachmentStore[Any], s3_client: Any, bucket: str
) -> None:
    stray = await create(s3, size=len(PNG))
    await delete(s3, stray["id"])
    assert await put(stray, PNG) == 200
    sent = await s3.upload(b"sent", name="s.txt", mime_type="text/plain", context=ctx())
    user_input = {"content": [], "attachments": [sent.id], "inference_options": {}}
    request = {"type": "threads.create", "params": {"input": user_input}}
    await call(EchoServer(s3.store, s3), request, ctx())
    s3.upload_ttl = 0
    assert await s3.delete_orphans(older_than=timedelta(0)) >= 1  # SQL tables hold others' too
    assert keys(s3_client, bucket) == [s3.key(s3.tenant_of(ctx()), sent.id)]
