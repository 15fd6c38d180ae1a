"""The attachment-store conformance suite against this package's attachment stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, SQLiteStore
from chatkit_stores.testing.attachments import AttachmentStoreTests


class TestDiskAttachmentStore(AttachmentStoreTests):
    @pytest_asyncio.fixture
    async def attachment_store(self, tmp_path: Path) -> AsyncIterator[DiskAttachmentStore[Any]]:
        async with SQLiteStore(tmp_path / "chat.db") as store:
            yield DiskAttachmentStore(
                store, tmp_path / "files", base_url="http://test/files", secret="k" * 32
            )

    @pytest_asyncio.fixture
    async def http_client(
        self, attachment_store: DiskAttachmentStore[Any]
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = Starlette(routes=[Mount("/files", attachment_store.asgi_app())])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
