"""The demo's settings, responder choice, backend switching (PostgreSQL, MariaDB, S3) and CLI."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from chatkit.types import UserMessageItem

from chatkit_stores import (
    DiskAttachmentStore,
    MySQLStore,
    PostgresStore,
    S3AttachmentStore,
    SQLStore,
)
from chatkit_stores.demo import DemoSettings
from chatkit_stores.demo.app import create_app
from chatkit_stores.demo.check import run_check
from chatkit_stores.demo.responder import AgentResponder, EchoResponder, choose_responder
from chatkit_stores.demo.serve import banner, bind
from chatkit_stores.pytest_plugin import s3_credentials
from test_demo_server import assert_streamed_reply, events_of, png, user_input

# settings


def test_settings_defaults_are_the_embedded_backends() -> None:
    settings = DemoSettings.from_env({})
    assert settings.database_url == "sqlite:///chatkit-demo.db"
    assert settings.upload_dir == Path("chatkit-demo-uploads") and settings.s3_bucket is None
    assert (settings.host, settings.port, settings.url) == (
        "127.0.0.1",
        8000,
        "http://127.0.0.1:8000",
    )
    assert settings.secret_generated and len(settings.secret) >= 32
    assert DemoSettings.from_env({}).secret != settings.secret  # a new one per run
    assert settings.openai_api_key is None


def test_settings_from_environment_and_arguments() -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db/app",
        "UPLOAD_DIR": "/srv/uploads",
        "S3_BUCKET": "bucket",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "CHATKIT_STORES_SECRET": "s" * 40,
        "CHATKIT_STORES_DEMO_HOST": "0.0.0.0",
        "CHATKIT_STORES_DEMO_PORT": "9000",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "gpt-test",
    }
    settings = DemoSettings.from_env(env)
    assert settings.database_url == "postgresql://u:pw@db/app"
    assert settings.upload_dir == Path("/srv/uploads")
    assert (settings.s3_bucket, settings.s3_endpoint_url) == ("bucket", "http://minio:9000")
    assert settings.secret == "s" * 40 and not settings.secret_generated
    assert settings.url == "http://127.0.0.1:9000"  # reachable, not 0.0.0.0
    assert DemoSettings.from_env(env, host="::1", port=0).on_port(4321).url == "http://[::1]:4321"
    assert DemoSettings.from_env({**env, "PUBLIC_URL": "https://demo.example/"}).url == (
        "https://demo.example"
    )
    with pytest.raises(SystemExit, match="CHATKIT_STORES_DEMO_PORT='http' is not a port"):
        DemoSettings.from_env({"CHATKIT_STORES_DEMO_PORT": "http"})


def test_banner_names_the_backends_and_hides_passwords() -> None:
    settings = DemoSettings.from_env({"DATABASE_URL": "postgresql://u:hunter2@db/app"})
    text = banner(settings.on_port(8123), "offline echo")
    assert "hunter2" not in text and "postgresql://u:***@db/app" in text
    assert "Listening on http://127.0.0.1:8123" in text
    assert "NOT AUTHENTICATION" in text and "generated for this run" in text
    assert text.splitlines()[-1].strip().startswith("curl ")


# the responder


def test_responder_is_the_agents_sdk_only_with_an_openai_key() -> None:
    assert isinstance(choose_responder(DemoSettings.from_env({})), EchoResponder)
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_MODEL": "gpt-test"}
    agent = choose_responder(DemoSettings.from_env(env))
    assert isinstance(agent, AgentResponder)
    assert agent.agent.model == "gpt-test" and "Agents SDK" in agent.description


def test_echo_names_attachments() -> None:
    from chatkit_stores.demo.responder import echo_text

    message = UserMessageItem.model_validate(
        {
            "id": "msg_1",
            "thread_id": "thr_1",
            "created_at": "2025-01-01T00:00:00",
            "content": [{"type": "input_text", "text": " hi "}],
            "attachments": [
                {"type": "file", "id": "atc_1", "name": "a.pdf", "mime_type": "application/pdf"}
            ],
            "inference_options": {},
        }
    )
    assert echo_text(message) == "You said: hi and attached a.pdf (application/pdf)."


# backends switch with environment variables only


@asynccontextmanager
async def running(settings: DemoSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The demo app with its lifespan, and an httpx client talking to it in-process."""
    app = create_app(settings, responder=EchoResponder(pause=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.url) as client:
            yield app, client


@pytest.mark.parametrize(
    ("backend", "store_class"), [("postgres", PostgresStore), ("mysql", MySQLStore)]
)
async def test_database_url_switches_the_database(
    backend: str,
    store_class: type[SQLStore[Any]],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    drop_new_tables: Callable[..., str],
) -> None:
    url = drop_new_tables(str(request.getfixturevalue(f"{backend}_url")))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("UPLOAD_DIR", str(tmp_path / "up"))
    settings = DemoSettings.from_env()
    user = {"X-Demo-User": f"u-{uuid.uuid4().hex[:12]}"}
    async with running(settings) as (app, client):
        assert type(app.state.server.store) is store_class
        assert isinstance(app.state.server.attachment_store, DiskAttachmentStore)
        create = {"type": "threads.create", "params": {"input": user_input("on " + backend)}}
        events = events_of(await client.post("/chatkit", json=create, headers=user))
        assert_streamed_reply(events, f"You said: on {backend}.")
        thread_id = events[0]["thread"]["id"]

    async with SQLStore.from_url(url) as store:  # the rows are in that database
        context = {"user_id": user["X-Demo-User"]}
        assert (await store.load_thread(thread_id, context)).title == f"on {backend}"
        page = await store.load_thread_items(thread_id, None, 10, "asc", context)
        assert [item.type for item in page.data] == ["user_message", "assistant_message"]


async def test_s3_settings_switch_attachments_to_s3(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    credentials = s3_credentials()
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(signature_version="s3v4"), **credentials
    )
    bucket = f"ckt-demo-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    monkeypatch.chdir(tmp_path)  # default SQLite file lands here
    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint)
    for name, value in credentials.items():
        env = {"region_name": "AWS_DEFAULT_REGION"}.get(name, name.upper())
        monkeypatch.setenv(env, value)
    image = png()
    user = {"X-Demo-User": "alice"}
    async with running(DemoSettings.from_env()) as (app, http):
        files = app.state.server.attachment_store
        assert isinstance(files, S3AttachmentStore) and files.bucket == bucket
        assert (await http.get("/files/files/x")).status_code == 404  # no disk routes
        params = {"name": "dot.png", "size": len(image), "mime_type": "image/png"}
        create = {"type": "attachments.create", "params": params}
        attachment = (await http.post("/chatkit", json=create, headers=user)).json()
        upload = attachment["upload_descriptor"]
        assert upload["method"] == "PUT" and upload["url"].startswith(s3_endpoint)
        async with httpx.AsyncClient() as outside:  # the browser's PUT, straight to S3
            put = await outside.put(upload["url"], content=image, headers=upload["headers"])
            assert put.status_code == 200, put.text
        message = {"input": user_input("s3", [attachment["id"]])}
        send = {"type": "threads.create", "params": message}
        events = events_of(await http.post("/chatkit", json=send, headers=user))
        assert_streamed_reply(events, "You said: s3 and attached dot.png (image/png).")
        (stored,) = client.list_objects_v2(Bucket=bucket)["Contents"]
        assert stored["Key"].startswith("chatkit-demo/t_") and stored["Size"] == len(image)
        thread_id = events[0]["thread"]["id"]
        items = {"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}
        first = (await http.post("/chatkit", json=items, headers=user)).json()["data"][0]
        async with httpx.AsyncClient() as outside:
            preview = await outside.get(first["attachments"][0]["preview_url"])
            assert preview.status_code == 200 and preview.content == image
    assert (tmp_path / "chatkit-demo.db").is_file() and not (
        tmp_path / "chatkit-demo-uploads"
    ).exists()
    client.delete_object(Bucket=bucket, Key=stored["Key"])
    client.delete_bucket(Bucket=bucket)


# the command


async def test_check_round_trip_on_a_server_database(
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    drop_new_tables: Callable[..., str],
) -> None:
    url = drop_new_tables(postgres_url)
    settings = DemoSettings.from_env({"DATABASE_URL": url, "UPLOAD_DIR": str(tmp_path)})
    assert await run_check(settings, user=f"check-{uuid.uuid4().hex[:8]}") == 0
    out = capsys.readouterr().out
    assert "You said: Is this stored?." in out and "demo --check: OK" in out
    left = await asyncio.to_thread(lambda: [p for p in tmp_path.rglob("*") if p.is_file()])
    assert left == []  # it deleted what it made


def run_cli(*args: str, cwd: Path, code: str = "") -> subprocess.CompletedProcess[str]:
    script = (
        f"import sys\n{code}\nfrom chatkit_stores.cli import main\nsys.exit(main({list(args)!r}))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_check_command(tmp_path: Path) -> None:
    result = run_cli("demo", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo --check: OK" in result.stdout
    assert (tmp_path / "chatkit-demo.db").is_file()


def test_demo_without_the_extra_names_it(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path, code="sys.modules['fastapi'] = None")
    assert result.returncode != 0
    assert "pip install 'chatkit-stores[demo]'" in result.stderr and "fastapi" in result.stderr
    assert not (tmp_path / "chatkit-demo.db").exists()


def test_bad_port_and_busy_port(tmp_path: Path) -> None:
    result = run_cli("demo", "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2 and "not a port number: '99999'" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port}.*--port 0"):
            bind("127.0.0.1", port)
    free = bind("127.0.0.1", 0)
    assert free.getsockname()[1] > 0
    free.close()


def test_demo_help_lists_the_environment(tmp_path: Path) -> None:
    result = run_cli("demo", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("DATABASE_URL", "UPLOAD_DIR", "S3_BUCKET", "OPENAI_API_KEY", "X-Demo-User"):
        assert name in result.stdout
    assert json.dumps("--port")[1:-1] in result.stdout
