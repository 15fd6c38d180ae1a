"""End-to-end tests: a real ``ChatKitServer`` driven through its JSON protocol over the store.

Each test imports the demo's ``EchoServer`` itself: ``chatkit.server`` takes seconds to import,
which ``import chatkit_stores.testing`` should not pay.
"""

from __future__ import annotations

from typing import Any

import pytest
from chatkit.store import NotFoundError, Store

from . import models
from .capabilities import requires
from .fixtures import Ctx, StoreFixtures


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    """The ``input`` of a threads.create / threads.add_user_message request."""
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


class ServerTests(StoreFixtures):
    """A real ChatKitServer over the store: every request a ChatKit client sends for threads."""

    @pytest.mark.asyncio
    async def test_conversation(self, store: Store[Any], context: Ctx) -> None:
        """threads.create, add_user_message, items.list and threads.list/update/get/delete work."""
        from ..demo import EchoServer, call

        server = EchoServer(store)
        events = await call(
            server, {"type": "threads.create", "params": {"input": user_input("hello")}}, context
        )
        types = [e["type"] for e in events]
        assert types[0] == "thread.created" and types.count("thread.item.done") == 2, types
        thread_id = events[0]["thread"]["id"]

        for text in ("second", "third"):
            await call(
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
            page = await call(server, {"type": "items.list", "params": params}, context)
            texts += [_text(item) for item in page["data"]]
            if not page["has_more"]:
                break
            after = page["after"]
        assert texts == ["echo: third", "third", "echo: second", "second", "echo: hello", "hello"]

        listed = await call(server, {"type": "threads.list", "params": {"limit": 10}}, context)
        assert [t["id"] for t in listed["data"]] == [thread_id]
        assert listed["data"][0]["title"] == "About hello", "the title set during respond was saved"

        renamed = await call(
            server,
            {"type": "threads.update", "params": {"thread_id": thread_id, "title": "Renamed"}},
            context,
        )
        assert renamed["title"] == "Renamed"
        full = await call(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        assert full["title"] == "Renamed" and len(full["items"]["data"]) == 6

        await call(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, context)
        with pytest.raises(NotFoundError):
            await call(
                server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
            )
        listed = await call(server, {"type": "threads.list", "params": {"limit": 10}}, context)
        assert listed["data"] == []

    @pytest.mark.asyncio
    @requires("tenant_isolation")
    async def test_tenants_do_not_meet(
        self, store: Store[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """Through the server, another tenant can neither read nor delete a thread."""
        from ..demo import EchoServer, call

        server = EchoServer(store)
        events = await call(
            server, {"type": "threads.create", "params": {"input": user_input("mine")}}, context
        )
        thread_id = events[0]["thread"]["id"]
        with pytest.raises(NotFoundError):
            await call(
                server,
                {"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
                other_context,
            )
        page = await call(
            server, {"type": "items.list", "params": {"thread_id": thread_id}}, other_context
        )
        assert page["data"] == []
        await call(
            server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, other_context
        )
        full = await call(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        assert len(full["items"]["data"]) == 2, "another tenant's delete must not touch this thread"

    @pytest.mark.asyncio
    async def test_attachment_adopted_into_message(self, store: Store[Any], context: Ctx) -> None:
        """An attachment sent with a message is re-saved with the message's thread_id."""
        from ..demo import EchoServer, call

        server = EchoServer(store)
        attachment = models.file_attachment()
        await store.save_attachment(attachment, context)
        events = await call(
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

    @pytest.mark.asyncio
    @requires("tenant_isolation")
    async def test_foreign_attachment_refused(
        self, store: Store[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """Sending another tenant's attachment id fails and leaves that attachment untouched."""
        from ..demo import EchoServer, call

        server = EchoServer(store)
        theirs = models.file_attachment()
        await store.save_attachment(theirs, other_context)
        with pytest.raises(NotFoundError):
            await call(
                server,
                {"type": "threads.create", "params": {"input": user_input("steal", [theirs.id])}},
                context,
            )
        assert await store.load_attachment(theirs.id, other_context) == theirs, (
            "a user must not adopt another tenant's attachment by sending its id"
        )


def _text(item: dict[str, Any]) -> str:
    return " ".join(part.get("text", "") for part in item["content"])
