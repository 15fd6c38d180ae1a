"""A ChatKit server on FastAPI with a chatkit-stores store and attachments on disk.

Run (from this folder):
  CHATKIT_STORES_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
  DATABASE_URL=sqlite:///chat.db uvicorn fastapi_app:app
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatkit.errors import ErrorCode
from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import ErrorEvent
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from my_server import MyChatKitServer  # your ChatKitServer subclass (my_server.py, beside this)
from pydantic import ValidationError

from chatkit_stores import DiskAttachmentStore, SQLStore, UploadRejected

# --8<-- [start:stores]
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://localhost:8000")

store = SQLStore.from_url(os.environ.get("DATABASE_URL", "sqlite:///chat.db"))
files = DiskAttachmentStore(  # reads the signing secret from CHATKIT_STORES_SECRET
    store,
    os.environ.get("UPLOAD_DIR", "uploads"),  # bytes live under this folder
    base_url=f"{PUBLIC_URL}/files",  # where files.asgi_app() is mounted, below
    max_bytes=20 * 1024 * 1024,
    allowed_mime_types={"image/png", "image/jpeg", "application/pdf", "text/plain"},
)
server = MyChatKitServer(store, files)
# --8<-- [end:stores]


# --8<-- [start:app]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the tables at start-up; close the pool at shutdown."""
    await store.create_schema()  # idempotent; production databases use `chatkit-stores migrate`
    yield
    await store.close()


app = FastAPI(lifespan=lifespan)
app.mount("/files", files.asgi_app())  # signed two-phase uploads, downloads and previews


def current_user(request: Request) -> dict[str, str]:
    """The ChatKit request context: who is asking."""
    user_id = request.headers.get("x-user-id")  # in a real app: from your authentication
    if not user_id:
        raise HTTPException(status_code=401, detail="sign in first")
    return {"user_id": user_id}  # the tenant: every row is keyed by it


@app.post("/chatkit")
async def chatkit(request: Request) -> Response:
    """The ChatKit protocol endpoint."""
    try:
        result = await server.process(await request.body(), current_user(request))
    except ValidationError as error:
        raise HTTPException(status_code=400, detail="not a ChatKit request") from error
    except NotFoundError as error:  # a missing thread, or another user's: the same thing
        raise HTTPException(status_code=404, detail=str(error)) from error
    if isinstance(result, StreamingResult):
        return StreamingResponse(ending_cleanly(result), media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")


async def ending_cleanly(result: StreamingResult) -> AsyncIterator[bytes]:
    """The streamed events; an error after the 200 ends them with an error event, not a cut."""
    try:
        async for chunk in result:
            yield chunk
    except NotFoundError as error:  # e.g. a message to a thread that is not this user's
        yield event(ErrorEvent(message=str(error), allow_retry=False))
    except Exception:  # chatkit has logged it; the client is told instead of cut off
        yield event(ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=True))


def event(error: ErrorEvent) -> bytes:
    """One server-sent event, as chatkit writes them."""
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


logging.getLogger("chatkit").addFilter(NotFoundInOneLine())
# --8<-- [end:app]


# --8<-- [start:upload]
@app.post("/upload")  # the ChatKit client's "direct" upload strategy posts here
async def upload(request: Request, file: UploadFile) -> Response:
    """Store an uploaded file and return its attachment metadata."""
    try:
        attachment = await files.upload(
            file,  # read in chunks, never whole
            name=file.filename or "file",
            mime_type=file.content_type or "application/octet-stream",
            context=current_user(request),
        )
    except UploadRejected as error:
        raise HTTPException(status_code=error.status, detail=str(error)) from error
    return JSONResponse(attachment.model_dump(mode="json", exclude={"metadata"}))


# --8<-- [end:upload]
