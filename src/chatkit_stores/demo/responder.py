"""Who answers in the demo: an offline echo, or an Agents SDK agent when OPENAI_API_KEY is set."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chatkit.server import ChatKitServer
from chatkit.store import AttachmentStore, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    ImageAttachment,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from ..files import AttachmentStoreBase
from .settings import DemoSettings

HISTORY = 30
"""How many recent items the agent sees."""


@dataclass(frozen=True)
class Turn:
    """One user turn: the server, the thread, the new message and the request context."""

    server: DemoServer
    thread: ThreadMetadata
    message: UserMessageItem | None
    context: Any


class Responder(Protocol):
    """Produces the assistant's events for one user turn."""

    description: str

    def respond(self, turn: Turn) -> AsyncIterator[ThreadStreamEvent]:
        """Stream the answer to the turn's message."""
        ...


class DemoServer(ChatKitServer[Any]):
    """The demo's ChatKit server: titles new threads, then lets its responder answer."""

    def __init__(
        self,
        store: Store[Any],
        attachment_store: AttachmentStore[Any] | None,
        responder: Responder,
    ) -> None:
        super().__init__(store, attachment_store)
        self.responder = responder

    def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        """Title an untitled thread after its first message, then stream the responder's answer."""
        if thread.title is None and input_user_message is not None:
            thread.title = message_text(input_user_message)[:40] or "Untitled"
        return self.responder.respond(Turn(self, thread, input_user_message, context))


class EchoResponder:
    """Answers offline: repeats the message and lists its attachments, streamed word by word."""

    description = "offline echo (set OPENAI_API_KEY to answer with the Agents SDK)"

    def __init__(self, pause: float = 0.02) -> None:
        self.pause = pause  # between words, so the page shows the reply arriving

    async def respond(self, turn: Turn) -> AsyncIterator[ThreadStreamEvent]:
        """Stream ``You said: ...`` as an added item, text deltas, and the finished item."""
        text = echo_text(turn.message)
        item = AssistantMessageItem(
            id=turn.server.store.generate_item_id("message", turn.thread, turn.context),
            thread_id=turn.thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text="")],
        )
        yield ThreadItemAddedEvent(item=item)
        for index, word in enumerate(text.split(" ")):
            delta = word if index == 0 else f" {word}"
            update = AssistantMessageContentPartTextDelta(content_index=0, delta=delta)
            yield ThreadItemUpdatedEvent(item_id=item.id, update=update)
            await asyncio.sleep(self.pause)
        done = item.model_copy(update={"content": [AssistantMessageContent(text=text)]})
        yield ThreadItemDoneEvent(item=done)


class AgentResponder:
    """Answers with an Agents SDK agent over the thread's recent items (needs OPENAI_API_KEY)."""

    def __init__(self, model: str | None = None) -> None:
        from agents import Agent

        self.agent: Agent[Any] = Agent(
            name="chatkit-stores demo",
            instructions="You are a concise assistant in a demo of chatkit-stores, a library "
            "that stores ChatKit threads in SQLite, PostgreSQL or MySQL.",
            model=model,
        )
        self.description = f"Agents SDK, model {model or 'default'}"

    async def respond(self, turn: Turn) -> AsyncIterator[ThreadStreamEvent]:
        """Run the agent on the recent history and stream its events (chatkit.agents helpers)."""
        from agents import Runner
        from chatkit.agents import AgentContext, stream_agent_response

        store = turn.server.store
        page = await store.load_thread_items(turn.thread.id, None, HISTORY, "desc", turn.context)
        converter = _converter(turn.server.attachment_store, turn.context)
        agent_input = await converter.to_agent_input(list(reversed(page.data)))
        agent_context: AgentContext[Any] = AgentContext(
            thread=turn.thread, store=store, request_context=turn.context
        )
        result = Runner.run_streamed(self.agent, agent_input, context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event


def choose_responder(settings: DemoSettings) -> Responder:
    """The Agents SDK when an OpenAI key is configured, else the offline echo."""
    if settings.openai_api_key:
        return AgentResponder(settings.openai_model)
    return EchoResponder()


def message_text(message: UserMessageItem) -> str:
    """The text parts of a user message, joined."""
    return " ".join(getattr(part, "text", "") for part in message.content).strip()


def echo_text(message: UserMessageItem | None) -> str:
    """The offline answer: the message's text and the names of its attachments."""
    if message is None:
        return "Nothing to answer."
    reply = f"You said: {message_text(message) or '(nothing)'}"
    if message.attachments:
        names = ", ".join(f"{a.name} ({a.mime_type})" for a in message.attachments)
        reply += f" and attached {names}"
    return reply + "."


def _converter(files: AttachmentStore[Any] | None, context: Any) -> Any:
    """A ThreadItemConverter that gives the model images as data and other files by name."""
    from chatkit.agents import ThreadItemConverter

    class Converter(ThreadItemConverter):
        async def attachment_to_message_content(self, attachment: Attachment) -> Any:
            if isinstance(attachment, ImageAttachment) and isinstance(files, AttachmentStoreBase):
                data = base64.b64encode(await files.read(attachment.id, context)).decode()
                url = f"data:{attachment.mime_type};base64,{data}"
                return {"type": "input_image", "image_url": url, "detail": "auto"}
            return {"type": "input_text", "text": f"(attached file: {attachment.name})"}

    return Converter()
