"""``chatkit-stores demo`` as a user runs it: a real uvicorn process, driven over HTTP with httpx.

``DemoProcess`` and the ``demo`` fixture are shared with the browser test.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT = 60.0
LISTENING = re.compile(r"^Listening on (http://\S+)")


class DemoProcess:
    """``python -m chatkit_stores demo --port 0`` in ``cwd``; ``url`` once it serves."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.lines: list[str] = []
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CHATKIT_STORES_")}
        environ.pop("DATABASE_URL", None)
        environ.pop("OPENAI_API_KEY", None)
        environ.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatkit_stores", "demo", "--port", "0"],
            cwd=cwd,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._output: queue.Queue[str | None] = queue.Queue()
        self._ended = False  # the process's output reached its end
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._output.put(line.rstrip("\n"))
        self._output.put(None)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        url = ""
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._output.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("the demo exited:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if match := LISTENING.match(line):
                url = match.group(1)
            if line.strip().startswith("curl ") and url:  # the banner's last line
                return url
        self.stop()
        raise AssertionError(f"no banner within {START_TIMEOUT}s:\n" + "\n".join(self.lines))

    def output(self) -> str:
        """Everything printed so far."""
        self._drain(wait=False)
        return "\n".join(self.lines)

    def finish(self) -> str:
        """Stop the server; return everything it printed, to the end of its output."""
        self.stop()
        self._drain(wait=True)
        return "\n".join(self.lines)

    def _drain(self, wait: bool) -> None:
        while not self._ended:
            try:
                line = self._output.get(timeout=15) if wait else self._output.get_nowait()
            except queue.Empty:
                if wait:
                    raise AssertionError("the demo's output did not end after it stopped") from None
                return
            if line is None:
                self._ended = True
            else:
                self.lines.append(line)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    """A demo server on a free port, on its defaults, in an empty folder."""
    process = DemoProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop()


def png(width: int = 24, height: int = 24) -> bytes:
    """A small RGB gradient PNG, made here so the test needs no image library."""
    rows = b"".join(
        b"\0" + b"".join(bytes((x * 255 // width, y * 255 // height, 160)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


class Client:
    """A ChatKit protocol client for one demo user."""

    def __init__(self, http: httpx.Client, user: str) -> None:
        self.http = http
        self.headers = {"X-Demo-User": user}

    def post(self, request: dict[str, Any]) -> httpx.Response:
        return self.http.post("/chatkit", json=request, headers=self.headers)

    def ask(self, request: dict[str, Any]) -> Any:
        response = self.post(request)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    def stream(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return events_of(self.post(request))

    def items(self, thread_id: str) -> list[dict[str, Any]]:
        params = {"thread_id": thread_id, "limit": 50, "order": "asc"}
        page = self.ask({"type": "items.list", "params": params})
        return list(page["data"])

    def thread_ids(self) -> list[str]:
        page = self.ask({"type": "threads.list", "params": {"limit": 50, "order": "desc"}})
        return [thread["id"] for thread in page["data"]]


def assert_streamed_reply(events: list[dict[str, Any]], expected: str) -> str:
    """The assistant item was added, streamed as deltas, and finished with ``expected``."""
    added = [e for e in events if e["type"] == "thread.item.added"]
    assert [e["item"]["type"] for e in added] == ["assistant_message"], events
    item_id = added[0]["item"]["id"]
    deltas = [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated" and e["item_id"] == item_id
    ]
    assert len(deltas) > 1 and "".join(deltas) == expected
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert [item["type"] for item in done] == ["user_message", "assistant_message"]
    assert done[1]["id"] == item_id and done[1]["content"][0]["text"] == expected
    return str(item_id)


def test_banner_curl_line_creates_a_thread(demo: DemoProcess, tmp_path: Path) -> None:
    output = demo.output()
    assert "DEMO ONLY, NOT AUTHENTICATION" in output
    assert "secret:" in output and "generated for this run" in output
    assert (
        "sqlite:///chatkit-demo.db" in output and str(tmp_path / "chatkit-demo-uploads") in output
    )
    curl = next(line.strip() for line in demo.lines if line.strip().startswith("curl "))
    argv = shlex.split(curl)
    assert argv[-1] == f"{demo.url}/chatkit"
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["type"] == "threads.create"
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the banner's request was checked, not sent")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    events = [
        json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith("data: ")
    ]
    assert events[0]["type"] == "thread.created"
    assert_streamed_reply(events, "You said: Hello from curl.")
    assert (tmp_path / "chatkit-demo.db").is_file()


def test_protocol_round_trip_and_tenants(demo: DemoProcess) -> None:
    with httpx.Client(base_url=demo.url, timeout=30) as http:
        alice = Client(http, f"alice-{uuid.uuid4().hex[:8]}")
        bob = Client(http, f"bob-{uuid.uuid4().hex[:8]}")

        events = alice.stream({"type": "threads.create", "params": {"input": user_input("hi")}})
        assert events[0]["type"] == "thread.created"
        thread_id = events[0]["thread"]["id"]
        assert_streamed_reply(events, "You said: hi.")
        titles = [e["thread"]["title"] for e in events if e["type"] == "thread.updated"]
        assert titles == ["hi"]

        second = alice.stream(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": user_input("again")},
            }
        )
        assert_streamed_reply(second, "You said: again.")
        texts = [item["content"][0]["text"] for item in alice.items(thread_id)]
        assert texts == ["hi", "You said: hi.", "again", "You said: again."]
        assert alice.thread_ids() == [thread_id]

        # another demo user sees nothing of alice's
        assert bob.thread_ids() == []
        assert bob.items(thread_id) == []
        get = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
        assert bob.post(get).status_code == 404
        bob.stream({"type": "threads.create", "params": {"input": user_input("mine")}})
        assert len(bob.thread_ids()) == 1 and alice.thread_ids() == [thread_id]

        # no user, or not a ChatKit request
        anonymous = http.post("/chatkit", json=get)
        assert anonymous.status_code == 401 and "not authentication" in anonymous.json()["error"]
        bad = http.post("/chatkit", json={"type": "nope"}, headers=alice.headers)
        assert bad.status_code == 400 and "not a ChatKit request" in bad.json()["error"]


def test_missing_threads_and_bad_users_get_one_clear_answer(demo: DemoProcess) -> None:
    """Another user's thread is missing: a 404, or a stream that ends with an error event."""
    with httpx.Client(base_url=demo.url, timeout=30) as http:
        alice = Client(http, f"alice-{uuid.uuid4().hex[:8]}")
        bob = Client(http, f"bob-{uuid.uuid4().hex[:8]}")
        created = alice.stream({"type": "threads.create", "params": {"input": user_input("hi")}})
        thread_id = created[0]["thread"]["id"]
        before = alice.items(thread_id)

        for missing in (thread_id, "thr_missing"):
            add = {
                "type": "threads.add_user_message",
                "params": {"thread_id": missing, "input": user_input("let me in")},
            }
            # the whole stream arrives (a cut chunked body raises in httpx), ending in an error
            assert bob.stream(add) == [
                {
                    "type": "error",
                    "code": "custom",
                    "message": f"Thread {missing} not found",
                    "allow_retry": False,
                }
            ]
            get = {"type": "threads.get_by_id", "params": {"thread_id": missing}}
            answer = bob.post(get)
            assert answer.status_code == 404
            assert answer.json() == {"error": f"Thread {missing} not found"}
        assert alice.items(thread_id) == before and bob.thread_ids() == []

        for name in ("not a name!", "", "x" * 65):
            refused = http.post("/chatkit", json=add, headers={"X-Demo-User": name})
            assert refused.status_code == 401
            assert list(refused.json()) == ["error"] and "1-64 letters" in refused.json()["error"]
        bad = http.post("/chatkit", content=b"{not json", headers=alice.headers)
        assert bad.status_code == 400 and list(bad.json()) == ["error"]
    output = demo.finish()
    assert "Traceback" not in output and "\nERROR" not in output, output


def test_attachment_create_upload_download(demo: DemoProcess) -> None:
    image = png()
    with httpx.Client(base_url=demo.url, timeout=30) as http:
        alice = Client(http, "alice")
        params = {"name": "dot.png", "size": len(image), "mime_type": "image/png"}
        created = alice.ask({"type": "attachments.create", "params": params})
        upload = created["upload_descriptor"]
        assert upload["method"] == "POST" and upload["url"].startswith(f"{demo.url}/files/upload/")

        files = {"file": ("dot.png", image, "image/png")}
        uploaded = http.post(upload["url"], files=files)
        assert uploaded.status_code == 200, uploaded.text
        done = uploaded.json()
        assert done["id"] == created["id"] and done["upload_descriptor"] is None
        again = http.post(upload["url"], files=files)
        assert again.status_code == 409  # a signed upload URL is good for one upload

        preview = http.get(done["preview_url"])
        assert preview.status_code == 200 and preview.content == image
        assert preview.headers["content-type"] == "image/png"
        tampered = done["preview_url"].replace("files/atc_", "files/atc_0")
        assert http.get(tampered).status_code in (403, 404)

        events = alice.stream(
            {"type": "threads.create", "params": {"input": user_input("look", [created["id"]])}}
        )
        assert_streamed_reply(events, "You said: look and attached dot.png (image/png).")
        thread_id = events[0]["thread"]["id"]
        message = alice.items(thread_id)[0]
        (attachment,) = message["attachments"]
        assert attachment["id"] == created["id"] and attachment["thread_id"] == thread_id
        assert http.get(attachment["preview_url"]).content == image


def test_history_survives_a_restart_with_a_new_secret(tmp_path: Path) -> None:
    image = png()
    first = DemoProcess(tmp_path)
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            alice = Client(http, "alice")
            params = {"name": "dot.png", "size": len(image), "mime_type": "image/png"}
            created = alice.ask({"type": "attachments.create", "params": params})
            files = {"file": ("dot.png", image, "image/png")}
            assert http.post(created["upload_descriptor"]["url"], files=files).status_code == 200
            events = alice.stream(
                {"type": "threads.create", "params": {"input": user_input("keep", [created["id"]])}}
            )
            thread_id = events[0]["thread"]["id"]
            old_preview = alice.items(thread_id)[0]["attachments"][0]["preview_url"]
    finally:
        first.stop()

    second = DemoProcess(tmp_path)  # same folder: same SQLite file and uploads, new secret
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            alice = Client(http, "alice")
            assert alice.thread_ids() == [thread_id]
            items = alice.items(thread_id)
            assert [item["content"][0]["text"] for item in items] == [
                "keep",
                "You said: keep and attached dot.png (image/png).",
            ]
            new_preview = items[0]["attachments"][0]["preview_url"]
            assert new_preview.startswith(second.url)
            assert http.get(new_preview).content == image  # re-signed on load
            old_path = httpx.URL(old_preview).raw_path.decode()
            assert http.get(old_path).status_code == 403  # signed with last run's secret
    finally:
        second.stop()
