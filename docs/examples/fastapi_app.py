"""A ChatKit server on FastAPI with a chatkit-stores store.

Run: DATABASE_URL=sqlite:///chat.db uvicorn fastapi_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatkit.server import StreamingResult
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from chatkit_stores import SQLStore
from chatkit_stores.demo import EchoServer  # stands in for your own ChatKitServer subclass

store = SQLStore.from_url(os.environ.get("DATABASE_URL", "sqlite:///chat.db"))
server = EchoServer(store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await store.create_schema()  # idempotent; production databases use `chatkit-stores migrate`
    yield
    await store.close()


app = FastAPI(lifespan=lifespan)


@app.post("/chatkit")
async def chatkit(request: Request) -> Response:
    user_id = request.headers.get("x-user-id")  # in a real app: from your authentication
    if not user_id:
        raise HTTPException(status_code=401, detail="sign in first")
    result = await server.process(await request.body(), {"user_id": user_id})
    if isinstance(result, StreamingResult):
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(content=result.json, media_type="application/json")
