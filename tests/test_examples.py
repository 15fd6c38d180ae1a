"""The examples in docs/examples/ (included into the docs pages) run against real backends."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from conftest import new_tables_dropped

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
EXAMPLE_PREFIXES = ("chatkit_", "support_")
"""The table prefixes the examples use (the default, and a second one)."""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """docs/examples on sys.path (the examples import each other); fresh modules per test."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for path in EXAMPLES.glob("*.py"):
        sys.modules.pop(path.stem, None)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database for the examples; on a server, the tables they make are dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chat.db'}"
        return
    url = str(request.getfixturevalue(f"{request.param}_url"))
    with new_tables_dropped(url, *EXAMPLE_PREFIXES):
        yield url


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


def first_event(response: httpx.Response) -> dict[str, Any]:
    return events_of(response)[0]


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    """The server-sent events of a complete stream (a cut one raises in the client)."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    blocks = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


@pytest.mark.asyncio
async def test_fastapi_example(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    examples: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHATKIT_STORES_SECRET", "example-secret-" + "x" * 32)
    monkeypatch.setenv("UPLOAD_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("PUBLIC_URL", "http://test")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    example = load_example("fastapi_app")
    async with example.lifespan(example.app):
        transport = httpx.ASGITransport(app=example.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def chatkit(request: dict[str, Any]) -> httpx.Response:
                return await client.post("/chatkit", json=request, headers={"x-user-id": "alice"})

            create = {"type": "threads.create", "params": {"input": user_input("hi")}}
            assert (await client.post("/chatkit", json=create)).status_code == 401
            thread_id = first_event(await chatkit(create))["thread"]["id"]
            get = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
            thread = (await chatkit(get)).json()
            texts = [item["content"][0]["text"] for item in thread["items"]["data"]]
            assert texts == ["hi", "echo: hi"]

            # direct upload (the app's /upload endpoint)
            uploaded = await client.post(
                "/upload",
                files={"file": ("cat.png", PNG, "image/png")},
                headers={"x-user-id": "alice"},
            )
            assert uploaded.status_code == 200, uploaded.text
            direct = uploaded.json()
            assert direct["upload_descriptor"] is None

            # two-phase upload: attachments.create, then the client posts to the signed URL
            created = await chatkit(
                {
                    "type": "attachments.create",
                    "params": {"name": "notes.txt", "size": 5, "mime_type": "text/plain"},
                }
            )
            pending = created.json()
            descriptor = pending["upload_descriptor"]
            assert descriptor["url"].startswith("http://test/files/")
            posted = await client.request(
                descriptor["method"],
                descriptor["url"],
                files={"file": ("notes.txt", b"notes", "text/plain")},
            )
            assert posted.status_code < 300, posted.text

            add = {
                "type": "threads.add_user_message",
                "params": {
                    "thread_id": thread_id,
                    "input": user_input("see", [direct["id"], pending["id"]]),
                },
            }
            await chatkit(add)
            thread = (await chatkit(get)).json()
            items = thread["items"]["data"]
            # the model input carried both files: the offline reply says what it was sent
            assert items[-1]["content"][0]["text"] == (
                "echo: see (+2 attachment(s): input_image, input_file)"
            )
            sent = items[2]["attachments"]
            assert [a["id"] for a in sent] == [direct["id"], pending["id"]]
            assert sent[1].get("upload_descriptor") is None
            assert (await client.get(sent[0]["preview_url"])).content == PNG

            refused = await client.post(
                "/upload",
                files={"file": ("x.html", b"<script>", "text/html")},
                headers={"x-user-id": "alice"},
            )
            assert refused.status_code == 415
            await assert_missing_is_not_an_error(client, thread_id, direct["id"])
            assert len((await chatkit(get)).json()["items"]["data"]) == len(items)

        tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
        assert tracebacks == [], "a missing thread or attachment is not a server error"

        # the converter puts the bytes into the model input, read back through the store
        server = example.server
        context = {"user_id": "alice"}
        metadata = await server.store.load_thread(thread_id, context)
        model_input = await server.model_input(metadata, context)
        parts = model_input[2]["content"]
        encoded = base64.b64encode(PNG).decode()
        assert parts[1] == {
            "type": "input_image",
            "image_url": f"data:image/png;base64,{encoded}",
            "detail": "auto",
        }
        assert (
            parts[2]["file_data"] == "data:text/plain;base64," + base64.b64encode(b"notes").decode()
        )
        assert parts[2]["filename"] == "notes.txt"


async def assert_missing_is_not_an_error(
    client: httpx.AsyncClient, alice_thread: str, alice_attachment: str
) -> None:
    """To mallory, alice's thread and attachment do not exist: a 404 or an error event."""

    async def mallory(request: dict[str, Any]) -> httpx.Response:
        return await client.post("/chatkit", json=request, headers={"x-user-id": "mallory"})

    for thread_id in (alice_thread, "thr_missing"):
        get = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
        missing = await mallory(get)
        assert missing.status_code == 404
        assert missing.json() == {"detail": f"Thread {thread_id} not found"}
        add = {
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": user_input("let me in")},
        }
        answer = await mallory(add)  # streamed: the 200 went out before the thread was loaded
        assert answer.status_code == 200
        assert events_of(answer) == [
            {
                "type": "error",
                "code": "custom",
                "message": f"Thread {thread_id} not found",
                "allow_retry": False,
            }
        ]
    # nor can mallory send alice's attachment: the new thread's stream ends with an error
    other = {"type": "threads.create", "params": {"input": user_input("mine?", [alice_attachment])}}
    events = events_of(await mallory(other))
    assert [e["type"] for e in events] == ["thread.created", "error"]
    assert events[-1]["message"] == f"Attachment {alice_attachment} not found"
    bad = await mallory({"type": "threads.nope"})
    assert bad.status_code == 400 and bad.json() == {"detail": "not a ChatKit request"}


@pytest.mark.asyncio
async def test_stores_example(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, examples: None
) -> None:
    monkeypatch.chdir(tmp_path)  # the constructors name chat.db; none of them does I/O
    monkeypatch.setenv("DATABASE_URL", database_url)
    example = load_example("stores")
    assert not (tmp_path / "chat.db").exists()
    assert "Hello" in await example.lifecycle(database_url)


@pytest.mark.asyncio
async def test_tenancy_example(database_url: str, examples: None) -> None:
    example = load_example("tenancy")
    await example.isolation(database_url)
    assert "tenant=lambda ctx" in await example.without_tenant(database_url)
    store = example.single(database_url)
    assert store.tenant_of({}) == store.tenant_of(example.RequestContext(user_id="x"))
    await store.close()


@pytest.mark.asyncio
async def test_migrations_example(
    database_url: str, examples: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatkit_stores import SQLStore
    from chatkit_stores.migrations import current

    example = load_example("migrations_api")
    store = SQLStore.from_url(database_url)
    try:
        await example.release_step(store.engine)
        assert capsys.readouterr().out.strip() == await current(store.engine)
        await example.second_prefix(store.engine, database_url)
        assert await current(store.engine, prefix="support_") is None
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_attachment_stores_example(tmp_path: Path, examples: None) -> None:
    from chatkit_stores import DiskAttachmentStore, SQLiteStore

    example = load_example("attachment_stores")
    async with SQLiteStore(tmp_path / "chat.db") as store:
        assert [s.bucket for s in example.s3_stores(store)] == ["my-bucket", "bucket"]
        files = DiskAttachmentStore(
            store, tmp_path / "up", base_url="http://test/files", secret="s" * 32
        )
        await files.upload(b"x", name="x.txt", mime_type="text/plain", context={"user_id": "a"})
        assert await example.collect_orphans(files) == 0  # younger than a day: kept


def run_pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=EXAMPLES,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_conformance_examples(postgres_url: str) -> None:
    """docs/examples/test_my_store.py passes (its xfail fails as expected)."""
    with new_tables_dropped(postgres_url, *EXAMPLE_PREFIXES):
        run_conformance_examples(postgres_url)


def run_conformance_examples(postgres_url: str) -> None:
    # the whole suite once; of the other classes, what they change
    only = "not (TestMyStoreWithMyContext or TestMyStoreCapabilities) or tenant or survives or nul"
    done = run_pytest(
        "-q", "-rs", "test_my_store.py", "-k", only, env={"CHATKIT_STORES_STATEFUL_EXAMPLES": "2"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d+ passed, \d+ skipped, \d+ deselected, 1 xfailed", done.stdout), (
        done.stdout
    )
    assert "capability 'nul_in_text' is disabled" in done.stdout
    command = Path(sys.executable).with_name("chatkit-stores")
    done = subprocess.run(
        [str(command), "conformance", "my_conformance:make_store", "-q", "-k", "round_trip"],
        cwd=EXAMPLES,
        env={**os.environ, "DATABASE_URL": postgres_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout
