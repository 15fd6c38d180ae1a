"""A ChatKitServer that sends the thread, attachments included, to a model.

With ``OPENAI_API_KEY`` set it runs an Agents SDK agent; without it, it answers offline with a
description of the model input it built, so the example runs anywhere.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from agents import Agent, Runner
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer
from chatkit.store import AttachmentStore
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    ImageAttachment,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from openai.types.responses import ResponseInputContentParam, ResponseInputItemParam

from chatkit_stores.files import AttachmentStoreBase


# --8<-- [start:converter]
class AttachmentConverter(ThreadItemConverter):
    """Sends each attachment to the model inline, read back from the attachment store."""

    def __init__(self, files: AttachmentStoreBase[Any], context: Any) -> None:
        self.files = files
        self.context = context  # the request's context: reads are tenant-checked

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        """An image or file content part carrying the bytes as a data URL."""
        data = await self.files.read(attachment.id, self.context)
        url = f"data:{attachment.mime_type};base64,{base64.b64encode(data).decode()}"
        if isinstance(attachment, ImageAttachment):
            return {"type": "input_image", "image_url": url, "detail": "auto"}
        return {"type": "input_file", "file_data": url, "filename": attachment.name}


# --8<-- [end:converter]


# --8<-- [start:server]
class MyChatKitServer(ChatKitServer[dict[str, str]]):
    """Answers with an agent when OPENAI_API_KEY is set, else with an offline summary."""

    def __init__(self, store: Any, files: AttachmentStore[Any]) -> None:
        super().__init__(store, files)
        self.agent = Agent(name="Assistant", instructions="Answer briefly.")

    async def model_input(
        self, thread: ThreadMetadata, context: dict[str, str]
    ) -> list[ResponseInputItemParam]:
        """The thread's last 50 items, oldest first, as Responses API input."""
        page = await self.store.load_thread_items(thread.id, None, 50, "desc", context)
        assert isinstance(self.attachment_store, AttachmentStoreBase)
        converter = AttachmentConverter(self.attachment_store, context)
        return await converter.to_agent_input(list(reversed(page.data)))

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        """Stream the answer to the thread's newest message."""
        model_input = await self.model_input(thread, context)
        if os.environ.get("OPENAI_API_KEY"):
            agent_context: AgentContext[Any] = AgentContext(
                thread=thread, store=self.store, request_context=context
            )
            result = Runner.run_streamed(self.agent, model_input, context=agent_context)
            async for event in stream_agent_response(agent_context, result):
                yield event
            return
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id=self.store.generate_item_id("message", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=offline_reply(model_input))],
            )
        )


# --8<-- [end:server]


def offline_reply(model_input: list[ResponseInputItemParam]) -> str:
    """What the model would have been sent: the last user text and its attachments."""
    last: dict[str, Any] = dict(model_input[-1])
    parts: list[dict[str, Any]] = list(last.get("content", []))
    text = " ".join(p["text"] for p in parts if p.get("type") == "input_text")
    files = [p["type"] for p in parts if p.get("type") in ("input_image", "input_file")]
    attached = f" (+{len(files)} attachment(s): {', '.join(files)})" if files else ""
    return f"echo: {text}{attached}"
