"""The examples in docs/ run against real backends."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.mark.asyncio
async def test_fastapi_example(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHATKIT_STORES_SECRET", "example-secret-" + "x" * 32)
    monkeypatch.setenv("UPLOAD_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("PUBLIC_URL", "http://test")
    example = load_example("fastapi_app")
    async with example.lifespan(example.app):
        transport = httpx.ASGITransport(app=example.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            create = {
                "type": "threads.create",
                "params": {
                    "input": {
                        "content": [{"type": "input_text", "text": "hi"}],
                        "attachments": [],
                        "inference_options": {},
                    }
                },
            }
            assert (await client.post("/chatkit", json=create)).status_code == 401
            headers = {"x-user-id": "alice"}
            response = await client.post("/chatkit", json=create, headers=headers)
            assert response.headers["content-type"].startswith("text/event-stream")
            first = json.loads(response.text.split("\n\n")[0].removeprefix("data: "))
            thread_id = first["thread"]["id"]
            get = {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}
            thread = (await client.post("/chatkit", json=get, headers=headers)).json()
            texts = [item["content"][0]["text"] for item in thread["items"]["data"]]
            assert texts == ["hi", "echo: hi"]

            # direct upload, then the file in a message, then its preview
            png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
            uploaded = await client.post(
                "/upload", files={"file": ("cat.png", png, "image/png")}, headers=headers
            )
            assert uploaded.status_code == 200, uploaded.text
            attachment = uploaded.json()
            add = {
                "type": "threads.add_user_message",
                "params": {
                    "thread_id": thread_id,
                    "input": {
                        "content": [{"type": "input_text", "text": "see"}],
                        "attachments": [attachment["id"]],
                        "inference_options": {},
                    },
                },
            }
            await client.post("/chatkit", json=add, headers=headers)
            thread = (await client.post("/chatkit", json=get, headers=headers)).json()
            preview = thread["items"]["data"][2]["attachments"][0]["preview_url"]
            assert (await client.get(preview)).content == png
            refused = await client.post(
                "/upload", files={"file": ("x.html", b"<script>", "text/html")}, headers=headers
            )
            assert refused.status_code == 415
