"""The attachment-store conformance suite against this package's attachment stores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest_asyncio
from botocore.config import Config
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, S3AttachmentStore, SQLiteStore
from chatkit_stores.pytest_plugin import s3_credentials
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


class TestS3AttachmentStore(AttachmentStoreTests):
    @pytest_asyncio.fixture
    async def attachment_store(
        self, tmp_path: Path, s3_endpoint: str
    ) -> AsyncIterator[S3AttachmentStore[Any]]:
        client = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            config=Config(signature_version="s3v4"),
            **s3_credentials(),
        )
        bucket = f"conformance-{uuid.uuid4().hex[:20]}"
        client.create_bucket(Bucket=bucket)
        async with SQLiteStore(tmp_path / "chat.db") as store:
            yield S3AttachmentStore(store, bucket, client=client)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=entry["Key"])
        client.delete_bucket(Bucket=bucket)
