"""Conformance tests for attachment stores: uploads, previews, reading back, deletion, tenants.

Subclass :class:`AttachmentStoreTests` and override ``attachment_store`` (an attachment store
linked to a metadata ``Store``) and, when its URLs point at an app of yours rather than a real
server, ``http_client`` (an ``httpx.AsyncClient`` that reaches them). Two-phase uploads are
tested when ``create_attachment`` is overridden; direct uploads, reading back and previews use
this package's ``upload``/``read`` API when the store has it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import Attachment, AttachmentCreateParams, FileAttachment, ImageAttachment

from .fixtures import Ctx, StoreFixtures, async_tests, expect_error

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(4096)
TEXT = "hello 😀\n".encode() * 100


@async_tests
class AttachmentStoreTests(StoreFixtures):
    """What ChatKit and its clients rely on an attachment store to do."""

    @pytest_asyncio.fixture
    async def attachment_store(self) -> AsyncIterator[AttachmentStore[Any]]:
        """Yield the attachment store under test, linked to its metadata store. Override this."""
        raise NotImplementedError("Override the `attachment_store` fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def metadata_store(self, attachment_store: Any) -> Store[Any]:
        """The Store that keeps the attachments' metadata (default: ``attachment_store.store``)."""
        store: Store[Any] = attachment_store.store
        return store

    @pytest_asyncio.fixture
    async def http_client(self) -> AsyncIterator[Any]:
        """An ``httpx.AsyncClient`` that reaches the URLs the store issues."""
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            yield client

    # helpers

    @staticmethod
    def two_phase(attachment_store: AttachmentStore[Any]) -> None:
        """Skip unless the store overrides ``create_attachment`` (two-phase uploads)."""
        if type(attachment_store).create_attachment is AttachmentStore.create_attachment:
            pytest.skip("two-phase uploads: the store does not override create_attachment")

    @staticmethod
    def direct(attachment_store: AttachmentStore[Any]) -> None:
        """Skip unless the store has this package's ``upload``/``read`` API."""
        if not (hasattr(attachment_store, "upload") and hasattr(attachment_store, "read")):
            pytest.skip("direct uploads: the store has no upload()/read()")

    async def create(
        self,
        attachment_store: AttachmentStore[Any],
        metadata_store: Store[Any],
        context: Ctx,
        name: str,
        mime_type: str,
        size: int,
    ) -> Attachment:
        """attachments.create as ChatKitServer does it: create, then save the metadata."""
        attachment = await attachment_store.create_attachment(
            AttachmentCreateParams(name=name, size=size, mime_type=mime_type), context
        )
        await metadata_store.save_attachment(attachment, context)
        return attachment

    async def send(self, http_client: Any, attachment: Attachment, body: bytes) -> Any:
        """Upload ``body`` the way the ChatKit client does, following the descriptor."""
        descriptor = attachment.upload_descriptor
        assert descriptor is not None
        url = str(descriptor.url)
        if descriptor.method == "POST":
            files = {"file": (attachment.name, body, attachment.mime_type)}
            return await http_client.post(url, files=files, headers=descriptor.headers)
        return await http_client.put(url, content=body, headers=descriptor.headers)

    # tests

    async def test_create_describes_the_upload(
        self, attachment_store: AttachmentStore[Any], context: Ctx
    ) -> None:
        """create_attachment returns an image or file attachment with an upload descriptor."""
        self.two_phase(attachment_store)
        params = AttachmentCreateParams(name="cat.png", size=len(PNG), mime_type="image/png")
        image = await attachment_store.create_attachment(params, context)
        assert isinstance(image, ImageAttachment), "image/png must become an ImageAttachment"
        params = AttachmentCreateParams(name="notes.txt", size=len(TEXT), mime_type="text/plain")
        text = await attachment_store.create_attachment(params, context)
        assert isinstance(text, FileAttachment)
        for attachment in (image, text):
            descriptor = attachment.upload_descriptor
            assert descriptor is not None, "a two-phase attachment tells the client where to upload"
            assert descriptor.method in ("POST", "PUT")
            assert str(descriptor.url).startswith(("http://", "https://"))
        assert image.id != text.id

    async def test_two_phase_upload(
        self,
        attachment_store: AttachmentStore[Any],
        metadata_store: Store[Any],
        http_client: Any,
        context: Ctx,
    ) -> None:
        """Bytes sent to the issued URL arrive, and the attachment then shows as uploaded."""
        self.two_phase(attachment_store)
        attachment = await self.create(
            attachment_store, metadata_store, context, "cat.png", "image/png", len(PNG)
        )
        pending = await metadata_store.load_attachment(attachment.id, context)
        assert pending.upload_descriptor is not None, "bytes that never arrived are not uploaded"
        response = await self.send(http_client, attachment, PNG)
        assert response.status_code < 300, f"upload refused: {response.status_code} {response.text}"
        done = await metadata_store.load_attachment(attachment.id, context)
        assert done.upload_descriptor is None, "after the upload, the descriptor is cleared"
        if hasattr(attachment_store, "read"):
            assert await attachment_store.read(attachment.id, context) == PNG

    async def test_preview_serves_the_image(
        self,
        attachment_store: AttachmentStore[Any],
        metadata_store: Store[Any],
        http_client: Any,
        context: Ctx,
    ) -> None:
        """The preview URL of a loaded image attachment serves its bytes."""
        self.direct(attachment_store)
        image = await attachment_store.upload(  # type: ignore[attr-defined]
            PNG, name="cat.png", mime_type="image/png", context=context
        )
        loaded = await metadata_store.load_attachment(image.id, context)
        assert isinstance(loaded, ImageAttachment)
        response = await http_client.get(str(loaded.preview_url))
        assert response.status_code == 200 and response.content == PNG, "previews show the image"

    async def test_direct_upload_reads_back(
        self, attachment_store: AttachmentStore[Any], metadata_store: Store[Any], context: Ctx
    ) -> None:
        """A direct upload is saved as uploaded and reads back byte for byte."""
        self.direct(attachment_store)
        uploaded = await attachment_store.upload(  # type: ignore[attr-defined]
            TEXT, name="notes.txt", mime_type="text/plain", context=context
        )
        assert uploaded.upload_descriptor is None
        assert await metadata_store.load_attachment(uploaded.id, context) == uploaded
        assert await attachment_store.read(uploaded.id, context) == TEXT  # type: ignore[attr-defined]

    async def test_delete(
        self, attachment_store: AttachmentStore[Any], context: Ctx, other_context: Ctx
    ) -> None:
        """Deleting removes the bytes; another tenant's delete or read reaches nothing."""
        self.direct(attachment_store)
        uploaded = await attachment_store.upload(  # type: ignore[attr-defined]
            TEXT, name="notes.txt", mime_type="text/plain", context=context
        )
        await attachment_store.delete_attachment(uploaded.id, other_context)
        assert await attachment_store.read(uploaded.id, context) == TEXT, (  # type: ignore[attr-defined]
            "another tenant's delete must not touch this attachment"
        )
        await expect_error(
            attachment_store.read(uploaded.id, other_context),  # type: ignore[attr-defined]
            NotFoundError,
            "another tenant's attachment bytes must look missing (NotFoundError)",
        )
        await attachment_store.delete_attachment(uploaded.id, context)
        await expect_error(
            attachment_store.read(uploaded.id, context),  # type: ignore[attr-defined]
            NotFoundError,
            "delete_attachment must delete the bytes: they still read",
        )
        await attachment_store.delete_attachment(uploaded.id, context)  # twice is fine
