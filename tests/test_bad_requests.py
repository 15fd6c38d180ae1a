"""Bad requests (issue 15): each gets one JSON error with its documented HTTP status.

For every entry: the answer is a JSON object with one ``error`` line, no error or traceback is
logged, and nothing is left on disk or changed in the database (for a streamed request, the
answer is a complete stream ending with one ``error`` event). The upload app runs on every
metadata store; the demo's endpoint on SQLite, in-process (tests/test_demo_server.py sends the
same requests to the real demo process, tests/test_examples.py to the FastAPI example on all
three databases).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore
from chatkit_stores.demo import EchoServer, call
from conftest import TEST_PREFIX

SECRET = "bad-requests-" + "x" * 32
MAX_BYTES = 1024
PADDING = 4 * 1024 * 1024
BOUNDARY = "bad-b0undary"


@pytest.fixture
def no_tracebacks(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Fails the test if anything logged an error or a traceback, or printed one."""
    caplog.set_level(logging.DEBUG)
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    loud = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert loud == [], [r.getMessage() for r in loud]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def assert_json_error(response: httpx.Response, status: int, message: str) -> None:
    """One JSON error of one line, with ``status`` and ``message`` in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and message in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]


# the upload app of DiskAttachmentStore


@pytest_asyncio.fixture
async def disk(metadata_url: str, tmp_path: Path) -> AsyncIterator[DiskAttachmentStore[Any]]:
    store: Any = (
        MemoryStore()
        if metadata_url == "memory"
        else SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX)
    )
    yield DiskAttachmentStore(
        store, tmp_path / "files", base_url="http://test/files", secret=SECRET, max_bytes=MAX_BYTES
    )
    if isinstance(store, SQLStore):
        await store.close()


@pytest_asyncio.fixture
async def http(disk: DiskAttachmentStore[Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


CONTEXT = {"user_id": "alice"}


async def pending_upload(disk: DiskAttachmentStore[Any]) -> tuple[str, str]:
    """A two-phase attachment created through ChatKit: its id and signed upload URL."""
    params = {"name": "notes.txt", "size": 5, "mime_type": "text/plain"}
    created = await call(
        EchoServer(disk.store, disk), {"type": "attachments.create", "params": params}, CONTEXT
    )
    return created["id"], created["upload_descriptor"]["url"]


def files_in(disk: DiskAttachmentStore[Any]) -> list[Path]:
    return [p for p in disk.root.rglob("*") if p.is_file()] if disk.root.exists() else []


async def assert_still_pending(disk: DiskAttachmentStore[Any], attachment_id: str) -> None:
    """The refused upload stored nothing: no file, and the attachment still awaits its bytes."""
    assert files_in(disk) == []
    attachment = await disk.store.load_attachment(attachment_id, CONTEXT)
    assert attachment.upload_descriptor is not None


def with_signature(url: str, signature: str) -> str:
    """``url`` with its ``s`` parameter replaced by ``signature`` (percent-encoded as UTF-8)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | {"s": signature}
    return parts._replace(query=urlencode(query)).geturl()


NON_ASCII = {"e-acute": "é", "replacement character": "\ufffd", "emoji": "🙂" * 43}


@pytest.mark.parametrize("signature", NON_ASCII.values(), ids=NON_ASCII.keys())
async def test_non_ascii_signature_upload_is_403(
    disk: DiskAttachmentStore[Any], http: httpx.AsyncClient, no_tracebacks: None, signature: str
) -> None:
    attachment_id, url = await pending_upload(disk)
    files = {"file": ("notes.txt", b"notes", "text/plain")}
    response = await http.post(with_signature(url, signature), files=files)
    assert_json_error(response, 403, "bad signature")
    await assert_still_pending(disk, attachment_id)


async def test_invalid_utf8_signature_upload_is_403(
    disk: DiskAttachmentStore[Any], http: httpx.AsyncClient, no_tracebacks: None
) -> None:
    """``s=%FF`` decodes to U+FFFD; still a plain 403."""
    attachment_id, url = await pending_upload(disk)
    raw = url.split("&s=")[0] + "&s=%FF%C3"
    response = await http.post(raw, files={"file": ("notes.txt", b"notes", "text/plain")})
    assert_json_error(response, 403, "bad signature")
    await assert_still_pending(disk, attachment_id)


@pytest.mark.parametrize("signature", NON_ASCII.values(), ids=NON_ASCII.keys())
async def test_non_ascii_signature_download_is_403(
    disk: DiskAttachmentStore[Any], http: httpx.AsyncClient, no_tracebacks: None, signature: str
) -> None:
    attachment = await disk.upload(b"notes", name="n.txt", mime_type="text/plain", context=CONTEXT)
    url = disk.download_url(attachment.id, CONTEXT)
    assert (await http.get(url)).content == b"notes"
    assert_json_error(await http.get(with_signature(url, signature)), 403, "bad signature")
    assert await disk.read(attachment.id, CONTEXT) == b"notes"


def multipart(*fields: tuple[str, bytes]) -> bytes:
    """A multipart/form-data body with ``fields`` in order (``file`` is sent as a file)."""
    body = b""
    for name, data in fields:
        filename = '; filename="notes.txt"' if name == "file" else ""
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
        body += head.encode() + b"Content-Type: text/plain\r\n\r\n" + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``body`` as a stream: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


PADDED = {
    "field before the file": [("padding", b"p" * PADDING), ("file", b"notes")],
    "field after the file": [("file", b"notes"), ("padding", b"p" * PADDING)],
}


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("fields", PADDED.values(), ids=PADDED.keys())
async def test_whole_multipart_body_is_bounded(
    disk: DiskAttachmentStore[Any],
    http: httpx.AsyncClient,
    no_tracebacks: None,
    declared: bool,
    fields: list[tuple[str, bytes]],
) -> None:
    """A 4 MiB body of a 5-byte file and another field: 413, with or without Content-Length."""
    attachment_id, url = await pending_upload(disk)
    body = multipart(*fields)
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    content = body if declared else chunked(body)
    response = await http.post(url, content=content, headers=headers)
    assert_json_error(response, 413, "larger than the limit")
    await assert_still_pending(disk, attachment_id)


async def test_a_body_just_under_the_bound_is_accepted(
    disk: DiskAttachmentStore[Any], http: httpx.AsyncClient
) -> None:
    """The bound leaves room for boundaries and small fields beside a file at the limit."""
    attachment_id, url = await pending_upload(disk)
    body = multipart(("note", b"n" * 1000), ("file", b"f" * MAX_BYTES))
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    response = await http.post(url, content=chunked(body, 100), headers=headers)
    assert response.status_code == 200, response.text
    assert await disk.read(attachment_id, CONTEXT) == b"f" * MAX_BYTES


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_put_body_is_bounded(
    metadata_url: str, tmp_path: Path, no_tracebacks: None, declared: bool
) -> None:
    store: Any = (
        MemoryStore()
        if metadata_url == "memory"
        else SQLStore.from_url(metadata_url, table_prefix=TEST_PREFIX)
    )
    disk = DiskAttachmentStore(
        store,
        tmp_path / "files",
        base_url="http://test/files",
        secret=SECRET,
        max_bytes=MAX_BYTES,
        upload_method="PUT",
    )
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            attachment_id, url = await pending_upload(disk)
            body = b"p" * PADDING
            content = body if declared else chunked(body)
            response = await http.put(url, content=content, headers={"content-type": "text/plain"})
            assert_json_error(response, 413, "larger than the limit")
            await assert_still_pending(disk, attachment_id)
    finally:
        if isinstance(store, SQLStore):
            await store.close()


def test_padding_is_larger_than_any_slack() -> None:
    """The padded bodies above exceed the limit however much room multipart framing gets."""
    from chatkit_stores.files.asgi import _MULTIPART_SLACK

    assert PADDING > MAX_BYTES + _MULTIPART_SLACK


# the demo's ChatKit endpoint (the same app `chatkit-stores demo` serves; tests/test_demo_server.py
# sends the same requests to the real process)


@pytest_asyncio.fixture
async def demo(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from chatkit_stores.demo import DemoSettings
    from chatkit_stores.demo.app import create_app
    from chatkit_stores.demo.responder import EchoResponder

    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}", "UPLOAD_DIR": str(tmp_path)}
    app = create_app(DemoSettings.from_env(env), responder=EchoResponder(pause=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            yield client


def user_input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


async def demo_state(demo: httpx.AsyncClient, user: str) -> list[Any]:
    """Every thread of ``user`` with its items, as the demo lists them."""
    headers = {"X-Demo-User": user}
    listed = {"type": "threads.list", "params": {"limit": 100, "order": "asc"}}
    threads = (await demo.post("/chatkit", json=listed, headers=headers)).json()["data"]
    state = []
    for thread in threads:
        get = {"type": "threads.get_by_id", "params": {"thread_id": thread["id"]}}
        state.append((await demo.post("/chatkit", json=get, headers=headers)).json())
    return state


async def test_demo_streamed_request_to_another_users_thread(
    demo: httpx.AsyncClient, no_tracebacks: None
) -> None:
    """200, then one error event and a complete stream; neither user's threads change."""
    alice, bob = {"X-Demo-User": "alice"}, {"X-Demo-User": "bob"}
    create = {"type": "threads.create", "params": {"input": user_input("hi")}}
    thread_id = events_of(await demo.post("/chatkit", json=create, headers=alice))[0]["thread"][
        "id"
    ]
    before = {user: await demo_state(demo, user) for user in ("alice", "bob")}
    for missing in (thread_id, "thr_missing"):
        add = {
            "type": "threads.add_user_message",
            "params": {"thread_id": missing, "input": user_input("let me in")},
        }
        events = events_of(await demo.post("/chatkit", json=add, headers=bob))
        assert events == [
            {
                "type": "error",
                "code": "custom",
                "message": f"Thread {missing} not found",
                "allow_retry": False,
            }
        ]
    assert {user: await demo_state(demo, user) for user in ("alice", "bob")} == before


BAD_DEMO_REQUESTS = {
    "another user's thread": ({"X-Demo-User": "bob"}, "get", 404, "not found"),
    "a missing thread": ({"X-Demo-User": "alice"}, "missing", 404, "Thread thr_missing not found"),
    "no user": ({}, "get", 401, "1-64 letters"),
    "a user name with a space": ({"X-Demo-User": "not a name"}, "get", 401, "1-64 letters"),
    "a 65-character user name": ({"X-Demo-User": "x" * 65}, "get", 401, "1-64 letters"),
    "not JSON": ({"X-Demo-User": "alice"}, "garbage", 400, "not a ChatKit request"),
    "an unknown request type": ({"X-Demo-User": "alice"}, "unknown", 400, "not a ChatKit request"),
}


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    BAD_DEMO_REQUESTS.values(),
    ids=BAD_DEMO_REQUESTS.keys(),
)
async def test_demo_json_requests(
    demo: httpx.AsyncClient,
    no_tracebacks: None,
    headers: dict[str, str],
    body: str,
    status: int,
    message: str,
) -> None:
    create = {"type": "threads.create", "params": {"input": user_input("hi")}}
    alice = {"X-Demo-User": "alice"}
    thread_id = events_of(await demo.post("/chatkit", json=create, headers=alice))[0]["thread"][
        "id"
    ]
    before = await demo_state(demo, "alice")
    content = {
        "get": json.dumps({"type": "threads.get_by_id", "params": {"thread_id": thread_id}}),
        "missing": json.dumps(
            {"type": "threads.get_by_id", "params": {"thread_id": "thr_missing"}}
        ),
        "garbage": "{not json",
        "unknown": json.dumps({"type": "threads.nope", "params": {}}),
    }[body]
    response = await demo.post("/chatkit", content=content.encode(), headers=headers)
    assert_json_error(response, status, message)
    assert await demo_state(demo, "alice") == before
