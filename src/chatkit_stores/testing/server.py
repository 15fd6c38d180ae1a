"""End-to-end tests: a real ``ChatKitServer`` driven through its JSON protocol over the store.

The suite owns its server: ``respond`` answers each user message with one assistant message
(``echo: <text>``) and titles a new thread. ``chatkit.server`` takes seconds to import, so it
is imported when a test first needs the server, not with ``chatkit_stores.testing``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from functools import cache
from typing import Any

from chatkit.store import NotFoundError, Store
from chatkit.types import ThreadMetadata, ThreadStreamEvent, UserMessageItem

from . import models
from .fixtures import Ctx, StoreFixtures, async_tests, expect_error


@cache
def echo_server_class() -> type[Any]:
    """The suite's ``ChatKitServer`` subclass, defined on first use (``chatkit.server`` is slow
    to import)."""
    from chatkit.server import ChatKitServer
    from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadItemDoneEvent

    class SuiteServer(ChatKitServer[Any]):
        """Answers ``echo: <text>``; a thread without a title gets ``About <text>``."""

        async def respond(
            self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
        ) -> AsyncIterator[ThreadStreamEvent]:
            """Yield one assistant message echoing the user's text."""
            parts = input_user_message.content if input_user_message else []
            said = " ".join(getattr(part, "text", "") for part in parts)
            thread.title = thread.title or f"About {said[:20]}"
            reply = AssistantMessageContent(text=f"echo: {said}")
            message_id = self.store.generate_item_id("message", thread, context)
            yield ThreadItemDoneEvent(
                item=AssistantMessageItem(
                    id=message_id, thread_id=thread.id, created_at=datetime.now(), content=[reply]
                )
            )

    return SuiteServer


def echo_server(store: Store[Any]) -> Any:
    """A ``ChatKitServer`` over ``store`` whose responses echo the user."""
    return echo_server_class()(store)


async def send(server: Any, request: dict[str, Any], context: Ctx) -> Any:
    """One request as the ChatKit client sends it: the JSON answer, or the streamed events."""
    result = await server.process(json.dumps(request), context)
    if hasattr(result, "json"):  # NonStreamingResult; a StreamingResult is iterated
        return json.loads(result.json)
    events = []
    async for chunk in result:
        events += [
            json.loads(line.removeprefix("data: "))
            for line in chunk.decode().splitlines()
            if line.startswith("data: ")
        ]
    return events


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    """The ``input`` of a threads.create / threads.add_user_message request."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


@async_tests
class ServerTests(StoreFixtures):
    """A real ChatKitServer over the store: every request a ChatKit client sends for threads."""

    async def test_conversation(self, store: Store[Any], context: Ctx) -> None:
        """threads.create, add_user_message, items.list and threads.list/update/get/delete work."""
        server = echo_server(store)
        events = await send(
            server, {"type": "threads.create", "params": {"input": user_input("hello")}}, context
        )
        types = [e["type"] for e in events]
        assert types[0] == "thread.created" and types.count("thread.item.done") == 2, types
        thread_id = events[0]["thread"]["id"]

        for text in ("second", "third"):
            await send(
                server,
                {
                    "type": "threads.add_user_message",
                    "params": {"thread_id": thread_id, "input": user_input(text)},
                },
                context,
            )

        texts = []
        after = None
        while True:  # items.list backwards, two at a time, as the client scrolls up
            params = {"thread_id": thread_id, "limit": 2, "order": "desc", "after": after}
            page = await send(server, {"type": "items.list", "params": params}, context)
            texts += [_text(item) for item in page["data"]]
            if not page["has_more"]:
                break
            after = page["after"]
        assert texts == [
            "echo: third",
            "third",
            "echo: second",
            "second",
            "echo: hello",
            "hello",
        ], (
            f"items.list newest first, two at a time, gave {texts}: a page after a cursor must "
            "continue exactly where the previous one stopped, in created_at order"
        )

        listed = await send(server, {"type": "threads.list", "params": {"limit": 10}}, context)
        assert [t["id"] for t in listed["data"]] == [thread_id], (
            "threads.list must list the thread threads.create made (load_threads)"
        )
        assert listed["data"][0]["title"] == "About hello", "the title set during respond was saved"

        renamed = await send(
            server,
            {"type": "threads.update", "params": {"thread_id": thread_id, "title": "Renamed"}},
            context,
        )
        assert renamed["title"] == "Renamed", "threads.update must save the new title"
        full = await send(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        assert full["title"] == "Renamed" and len(full["items"]["data"]) == 6, (
            "threads.get_by_id must load the renamed thread with its six items"
        )

        await send(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, context)
        await expect_error(
            send(
                server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
            ),
            NotFoundError,
            "threads.delete must delete the thread (delete_thread): it still loads",
        )
        listed = await send(server, {"type": "threads.list", "params": {"limit": 10}}, context)
        assert listed["data"] == [], "a deleted thread must leave threads.list"

    async def test_tenants_do_not_meet(
        self, store: Store[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """Through the server, another tenant can neither read nor delete a thread."""
        server = echo_server(store)
        events = await send(
            server, {"type": "threads.create", "params": {"input": user_input("mine")}}, context
        )
        thread_id = events[0]["thread"]["id"]
        await expect_error(
            send(
                server,
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
                other_context,
            ),
            NotFoundError,
            "another tenant must not open this thread: load_thread must filter by tenant",
        )
        page = await send(
            server, {"type": "items.list", "params": {"thread_id": thread_id}}, other_context
        )
        assert page["data"] == [], "another tenant must not list this thread's items"
        await send(
            server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, other_context
        )
        full = await send(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        assert len(full["items"]["data"]) == 2, "another tenant's delete must not touch this thread"

    async def test_attachment_adopted_into_message(self, store: Store[Any], context: Ctx) -> None:
        """An attachment sent with a message is re-saved with the message's thread_id."""
        server = echo_server(store)
        attachment = models.file_attachment()
        await store.save_attachment(attachment, context)
        events = await send(
            server,
            {
                "type": "threads.create",
                "params": {"input": user_input("see file", [attachment.id])},
            },
            context,
        )
        thread_id = events[0]["thread"]["id"]
        stored = await store.load_attachment(attachment.id, context)
        assert stored.thread_id == thread_id, "ChatKit re-saves the attachment with its thread_id"

    async def test_foreign_attachment_refused(
        self, store: Store[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """Sending another tenant's attachment id fails and leaves that attachment untouched."""
        server = echo_server(store)
        theirs = models.file_attachment()
        await store.save_attachment(theirs, other_context)
        stolen = {"type": "threads.create", "params": {"input": user_input("steal", [theirs.id])}}
        await expect_error(
            send(server, stolen, context),
            NotFoundError,
            "a user must not adopt another tenant's attachment by sending its id: "
            "load_attachment must filter by tenant",
        )
        assert await store.load_attachment(theirs.id, other_context) == theirs, (
            "a user must not adopt another tenant's attachment by sending its id"
        )


def _text(item: dict[str, Any]) -> str:
    return " ".join(part.get("text", "") for part in item["content"])
