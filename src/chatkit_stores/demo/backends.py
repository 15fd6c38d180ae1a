"""The demo's store and attachment store, as the settings name them."""

from __future__ import annotations

from typing import Any

from ..files import AttachmentStoreBase, DiskAttachmentStore
from ..sql import SQLStore
from .settings import DemoSettings

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
ALLOWED_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)
FILES_PATH = "/files"
"""Where the disk store's upload/download app is mounted."""


def build_store(settings: DemoSettings) -> SQLStore[Any]:
    """The SQL store ``DATABASE_URL`` names."""
    return SQLStore.from_url(settings.database_url)


def build_attachment_store(
    settings: DemoSettings, store: SQLStore[Any]
) -> AttachmentStoreBase[Any]:
    """S3 when ``S3_BUCKET`` is set, else a folder (``UPLOAD_DIR``) served under ``/files``."""
    limits: dict[str, Any] = {"max_bytes": MAX_UPLOAD_BYTES, "allowed_mime_types": ALLOWED_TYPES}
    if settings.s3_bucket:
        from ..files.s3 import S3AttachmentStore

        return S3AttachmentStore(
            store,
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            **limits,
        )
    return DiskAttachmentStore(
        store,
        settings.upload_dir,
        base_url=settings.url + FILES_PATH,
        secret=settings.signing_secrets,
        **limits,
    )


def describe(settings: DemoSettings) -> dict[str, str]:
    """What the demo runs on, for the start-up banner (no passwords)."""
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url).render_as_string(hide_password=True)
    if settings.s3_bucket:
        where = settings.s3_endpoint_url or "AWS"
        files = f"S3 bucket {settings.s3_bucket} at {where}, prefix {settings.s3_prefix}"
    else:
        files = f"folder {settings.upload_dir.resolve()} (UPLOAD_DIR; S3_BUCKET for S3)"
    return {"database": f"{database} (DATABASE_URL)", "attachments": files}
