"""``EchoServer``: the smallest ChatKit server, echoing the user; tests and examples use it.

``call`` sends one protocol request to a server in-process, the way the ChatKit client does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
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
