"""Attachment stores on S3, and collecting orphaned uploads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chatkit_stores import S3AttachmentStore, SQLStore
from chatkit_stores.files import AttachmentStoreBase


def s3_stores(store: SQLStore[Any]) -> list[S3AttachmentStore[Any]]:
    """S3 and an S3-compatible service (constructors do no I/O)."""
    # --8<-- [start:s3]
    files = S3AttachmentStore(store, "my-bucket", prefix="chatkit/")  # boto3 credential chain
    minio = S3AttachmentStore(store, "bucket", endpoint_url="http://minio:9000")  # S3-compatible
    # --8<-- [end:s3]
    return [files, minio]


async def collect_orphans(files: AttachmentStoreBase[Any]) -> int:
    """Delete uploads never sent in a message; returns how many."""
    # --8<-- [start:orphans]
    deleted = await files.delete_orphans(older_than=timedelta(days=1))
    # --8<-- [end:orphans]
    return deleted
