"""The demo's FastAPI app: the ChatKit endpoint, attachment routes and the page."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from chatkit.errors import ErrorCode
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import ErrorEvent
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from ..files import DiskAttachmentStore
from .backends import FILES_PATH, build_attachment_store, build_store
from .responder import DemoServer, Responder, choose_responder
from .settings import DemoSettings

USER_HEADER = "X-Demo-User"
DEMO_TENANCY = (
    f"DEMO ONLY, NOT AUTHENTICATION: the {USER_HEADER} header names the user and anyone can "
    "claim any name. A real app takes the user from its own authentication."
)
STATIC = Path(__file__).parent / "static"
PAGE_POLICY = "default-src 'self'; img-src * blob: data:; connect-src *; frame-ancestors 'none'"
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

log = logging.getLogger("chatkit_stores.demo")


class NotSignedIn(Exception):
    """The request names no demo user."""


def demo_user(request: Request) -> dict[str, str]:
    """The request context (the tenant) from the ``X-Demo-User`` header: a demo, not auth."""
    name = request.headers.get(USER_HEADER, "")
    if not _USER_NAME.match(name):
        raise NotSignedIn(
            f"send an {USER_HEADER} header of 1-64 letters, digits or _.@- (a demo user name, "
            "not authentication)"
        )
    return {"user_id": name}


def create_app(
    settings: DemoSettings,
    *,
    responder: Responder | None = None,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    """The demo app on the backends ``settings`` name; ``on_ready`` runs once tables exist."""
    store = build_store(settings)
    files = build_attachment_store(settings, store)
    server = DemoServer(store, files, responder or choose_responder(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.create_schema()  # idempotent
        log.warning(DEMO_TENANCY)
        quiet = NotFoundInOneLine()
        logging.getLogger("chatkit").addFilter(quiet)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            logging.getLogger("chatkit").removeFilter(quiet)
            await store.close()

    app = FastAPI(title="chatkit-stores demo", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.server = server

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, error: NotSignedIn) -> Response:
        return JSONResponse({"error": str(error)}, status_code=401)

    @app.post("/chatkit")
    async def chatkit(request: Request) -> Response:
        context = demo_user(request)
        try:
            result = await server.process(await request.body(), context)
        except ValidationError as error:
            return JSONResponse({"error": _first_error(error)}, status_code=400)
        except NotFoundError as error:
            return JSONResponse({"error": str(error)}, status_code=404)
        if isinstance(result, StreamingResult):
            return StreamingResponse(ending_cleanly(result), media_type="text/event-stream")
        return Response(content=result.json, media_type="application/json")

    @app.get("/demo/about")
    async def about() -> dict[str, Any]:
        return {
            "responder": server.responder.description,
            "attachments": "s3" if settings.s3_bucket else "disk",
            "user_header": USER_HEADER,
            "notice": DEMO_TENANCY,
        }

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers=_page_headers())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if isinstance(files, DiskAttachmentStore):
        app.mount(FILES_PATH, files.asgi_app())
    return app


async def ending_cleanly(result: StreamingResult) -> AsyncIterator[bytes]:
    """The streamed events; an error after the 200 ends them with an error event, not a cut."""
    try:
        async for chunk in result:
            yield chunk
    except NotFoundError as error:  # a missing thread or attachment, or another user's
        yield _event(ErrorEvent(message=str(error), allow_retry=False))
    except Exception:  # chatkit has logged it; the page is told instead of cut off
        yield _event(ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True))


def _event(error: ErrorEvent) -> bytes:
    return b"data: " + error.model_dump_json().encode() + b"\n\n"


class NotFoundInOneLine(logging.Filter):
    """chatkit logs a streamed request's NotFoundError with its traceback: one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Turn a NotFoundError's traceback into an INFO line; keep every other record."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, NotFoundError):
            record.msg, record.args, record.exc_info = f"not found: {error}", (), None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": PAGE_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0] if error.errors() else {"msg": str(error), "loc": ()}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"not a ChatKit request: {first['msg']}" + (f" at {where}" if where else "")
