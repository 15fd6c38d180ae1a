"""Attachment stores: the bytes of uploaded files, on local disk or S3."""

from .base import AttachmentStoreBase, UploadRejected
from .disk import DiskAttachmentStore
from .signing import SignatureError, Signer

__all__ = [
    "AttachmentStoreBase",
    "DiskAttachmentStore",
    "SignatureError",
    "Signer",
    "UploadRejected",
]
