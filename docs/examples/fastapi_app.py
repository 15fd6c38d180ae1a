"""A ChatKit server on FastAPI with a chatkit-stores store and attachments on disk.

Run (from this folder):
  CHATKIT_STORES_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
  DATABASE_URL=sqlite:///chat.db uvicorn fastapi_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatkit.server import StreamingResult
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from my_server import MyChatKitServer  # your ChatKitServer subclass (my_server.py, beside this)

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
    result = await server.process(await request.body(), current_user(request))
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")


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
