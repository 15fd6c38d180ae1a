"""``chatkit-stores demo --check``: one protocol round trip on the configured backends, no server.

Checks that ``DATABASE_URL`` and the attachment settings work before anything is served:
creates a thread through a real ``ChatKitServer``, reads it back, stores a small file and reads
its bytes back, then deletes what it made.
"""

from __future__ import annotations

from typing import Any

from .backends import build_attachment_store, build_store, describe
from .echo import call
from .responder import DemoServer, EchoResponder
from .settings import DemoSettings

PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e5270de2"
    "0000000049454e44ae426082"
)
"""A 1x1 PNG."""


async def run_check(settings: DemoSettings, user: str = "demo-check") -> int:
    """Run the round trip; print what happened; return the exit code (0 when all worked)."""
    context = {"user_id": user}
    store = build_store(settings)
    files = build_attachment_store(settings, store)
    server = DemoServer(store, files, EchoResponder(pause=0))
    for label, value in describe(settings).items():
        print(f"{label}: {value}")
    async with store:
        await store.create_schema()
        events = await call(server, _create("Is this stored?"), context)
        thread_id = events[0]["thread"]["id"]
        thread = await call(
            server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, context
        )
        texts = [_text(item) for item in thread["items"]["data"]]
        print(f"thread {thread_id} [{thread['title']}]: {texts}")
        attachment = await files.upload(
            PIXEL, name="pixel.png", mime_type="image/png", context=context
        )
        stored = await files.read(attachment.id, context)
        print(f"attachment {attachment.id}: {len(stored)} bytes stored and read back")
        await files.delete_attachment(attachment.id, context)
        await store.delete_attachment(attachment.id, context)
        await call(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, context)
    expected = ["Is this stored?", "You said: Is this stored?."]
    if texts != expected or stored != PIXEL:
        print(f"demo --check: FAILED (expected {expected} and the PNG back)")
        return 1
    print("demo --check: OK")
    return 0


def _create(text: str) -> dict[str, Any]:
    content = [{"type": "input_text", "text": text}]
    return {
        "type": "threads.create",
        "params": {"input": {"content": content, "attachments": [], "inference_options": {}}},
    }


def _text(item: dict[str, Any]) -> str:
    return " ".join(part.get("text", "") for part in item.get("content", []))
