"""A conversation stored and read back, to see the library work (``chatkit-stores demo``).

The demo drives a real ``ChatKitServer`` through its JSON protocol, the way the ChatKit client
does, over a ``SQLiteStore``; then opens the database again and prints the stored history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from chatkit.server import ChatKitServer, StreamingResult
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from .sql import SQLiteStore


class EchoServer(ChatKitServer[Any]):
    """A ChatKit server whose scripted ``respond`` echoes the user and titles new threads."""

    def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        """Echo the user's text as one assistant message; title the thread on its first turn."""
        return self._echo(thread, input_user_message, context)

    async def _echo(
        self, thread: ThreadMetadata, message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        text = " ".join(getattr(part, "text", "") for part in message.content) if message else ""
        if thread.title is None:
            thread.title = f"About {text[:20]}"
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id=self.store.generate_item_id("message", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=f"echo: {text}")],
            )
        )


async def call(server: ChatKitServer[Any], request: dict[str, Any], context: Any) -> Any:
    """Send one protocol request; return the JSON answer, or the list of streamed events."""
    result = await server.process(json.dumps(request), context)
    if isinstance(result, StreamingResult):
        events = []
        async for chunk in result:
            for line in chunk.decode().splitlines():
                if line.startswith("data: "):
                    events.append(json.loads(line[len("data: ") :]))
        return events
    return json.loads(result.json)


async def run_demo(path: Path, user: str = "demo-user") -> None:
    """Hold a short conversation on the SQLite file ``path``, then print it back from disk."""
    context = {"user_id": user}
    store = SQLiteStore[dict[str, str]](path)
    async with store:
        server = EchoServer(store)
        events = await call(server, _create("Hello, store!"), context)
        thread_id = events[0]["thread"]["id"]
        await call(server, _add(thread_id, "Is this persisted?"), context)
    print(f"Stored a conversation in {path} (thread {thread_id}).")

    store = SQLiteStore(path)  # a new pool: read back what is on disk
    async with store:
        server = EchoServer(store)
        threads = await call(server, {"type": "threads.list", "params": {"limit": 5}}, context)
        print(f"{user} has {len(threads['data'])} recent thread(s); the newest reads:")
        thread = await call(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        print(f"  [{thread['title']}]")
        for item in thread["items"]["data"]:
            text = " ".join(part.get("text", "") for part in item["content"])
            print(f"  {item['type']:>17}: {text}")


def _create(text: str) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": _input(text)}}


def _add(thread_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": _input(text)},
    }


def _input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }
