"""``chatkit-stores demo``: bind the port, print where the demo listens, run uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import socket

from ..files.signing import SECRET_ENV
from .app import DEMO_TENANCY, USER_HEADER, create_app
from .backends import build_store, describe
from .responder import choose_responder
from .settings import DemoSettings


def serve(settings: DemoSettings) -> None:
    """Run the demo server until interrupted; prints its address once it accepts requests.

    The database is prepared first, so one that cannot be used (a wrong password, a server
    that is down) is an error of the command, before anything listens.
    """
    import uvicorn

    asyncio.run(prepare_database(settings))
    sock = bind(settings.host, settings.port)
    settings = settings.on_port(sock.getsockname()[1])
    responder = choose_responder(settings)

    def ready() -> None:
        print(banner(settings, responder.description), flush=True)

    app = create_app(settings, responder=responder, on_ready=ready)
    _log_to_stderr()
    config = uvicorn.Config(app, log_level="info", lifespan="on", timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])


async def prepare_database(settings: DemoSettings) -> None:
    """Connect to the demo's database and create or upgrade its tables."""
    store = build_store(settings)
    try:
        await store.create_schema()
    finally:
        await store.close()


def _log_to_stderr() -> None:
    """Show the demo's own log lines (the tenancy warning) beside uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
    logger = logging.getLogger("chatkit_stores.demo")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), so the real port is known early."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SystemExit(
            f"chatkit-stores demo: error: cannot listen on {host}:{port} ({error.strerror}); "
            "pass --port 0 to take a free port"
        ) from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    return sock


def create_thread_command(url: str, user: str = "alice", text: str = "Hello from curl") -> str:
    """A curl command line that creates a thread through the ChatKit protocol."""
    request = {
        "type": "threads.create",
        "params": {
            "input": {
                "content": [{"type": "input_text", "text": text}],
                "attachments": [],
                "inference_options": {},
            }
        },
    }
    body = json.dumps(request, separators=(",", ":"))
    headers = f"-H {shlex.quote(f'{USER_HEADER}: {user}')} -H 'Content-Type: application/json'"
    return f"curl -sN {headers} -d {shlex.quote(body)} {url}/chatkit"


def banner(settings: DemoSettings, responder: str) -> str:
    """What the demo prints once it serves: backends, the demo-only tenancy, URL, a curl line."""
    lines = ["chatkit-stores demo"]
    for label, value in describe(settings).items():
        lines.append(f"  {label + ':':<13}{value}")
    lines.append(f"  {'responder:':<13}{responder}")
    if settings.secret_generated:
        lines.append(
            f"  {'secret:':<13}generated for this run; set {SECRET_ENV} to keep upload and "
            "download URLs valid across restarts"
        )
    lines.append(f"  {'users:':<13}{DEMO_TENANCY}")
    lines.append(f"Listening on {settings.url} (open it in a browser; Ctrl-C stops)")
    lines.append("Create a thread from a shell:")
    lines.append(f"  {create_thread_command(settings.url)}")
    return "\n".join(lines)
