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
async def test_fastapi_example(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
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
