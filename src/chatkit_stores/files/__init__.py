"""Attachment stores: the bytes of uploaded files, on local disk or S3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AttachmentStoreBase, UploadRejected
from .disk import DiskAttachmentStore
from .signing import SignatureError, Signer

if TYPE_CHECKING:
    from .s3 import S3AttachmentStore

__all__ = [
    "AttachmentStoreBase",
    "DiskAttachmentStore",
    "S3AttachmentStore",
    "SignatureError",
    "Signer",
    "UploadRejected",
]


def __getattr__(name: str) -> Any:
    """Import ``S3AttachmentStore`` on first use (boto3 is only needed once a store is built)."""
    if name == "S3AttachmentStore":
        from .s3 import S3AttachmentStore

        globals()[name] = S3AttachmentStore
        return S3AttachmentStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
