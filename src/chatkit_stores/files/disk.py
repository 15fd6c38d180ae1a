"""Attachment bytes in a local folder, uploaded and served through signed URLs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from chatkit.store import NotFoundError, Store
from chatkit.types import AttachmentUploadDescriptor
from pydantic import AnyUrl

from ..base import check_id
from .base import (
    ALREADY_UPLOADED,
    AttachmentOptions,
    AttachmentStoreBase,
    TContext,
    UploadRejected,
    limited,
)
from .signing import Grant, Secrets, Signer

if TYPE_CHECKING:
    from starlette.types import ASGIApp
    from typing_extensions import Unpack

CHUNK = 256 * 1024


class DiskAttachmentStore(AttachmentStoreBase[TContext]):
    """Keeps attachment bytes under ``root``; ``asgi_app()`` receives uploads and serves files.

    ``base_url`` is where that app is mounted (``app.mount("/files", disk.asgi_app())`` ->
    ``base_url="https://chat.example.com/files"``). URLs are HMAC-signed with ``secret`` (or
    ``CHATKIT_STORES_SECRET``), expire, and name one method, tenant and attachment. ``secret``
    may be a list: URLs are signed with the first and accepted with any, so a secret rotates
    without breaking URLs in flight (``CHATKIT_STORES_OLD_SECRETS``: earlier ones, by commas).
    """

    def __init__(
        self,
        store: Store[TContext],
        root: str | Path,
        *,
        base_url: str,
        secret: Secrets | None = None,
        upload_method: Literal["POST", "PUT"] = "POST",
        **options: Unpack[AttachmentOptions],
    ) -> None:
        super().__init__(store, **options)
        self.root = Path(root).resolve()
        self.base_url = base_url.rstrip("/")
        self.signer = Signer(secret)
        self.upload_method = upload_method

    backend = "disk"

    def asgi_app(self) -> ASGIApp:
        """The Starlette app for signed uploads and downloads; mount it at ``base_url``."""
        from .asgi import disk_app

        return disk_app(self)

    def path(self, tenant: str, attachment_id: str) -> Path:
        """Where the bytes live: derived only from hashes of tenant and id, never from names."""
        return self._folder(tenant) / f"a_{_digest(attachment_id)}"

    def _folder(self, tenant: str) -> Path:
        return self.root / f"t_{_digest(tenant)}"

    # AttachmentStoreBase

    async def _write(
        self, tenant: str, attachment_id: str, mime_type: str, chunks: AsyncIterable[bytes]
    ) -> int:
        target = self.path(tenant, attachment_id)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        handle = await asyncio.to_thread(partial.open, "xb")
        size = 0
        try:
            try:
                async for chunk in limited(chunks, self.max_bytes):
                    await asyncio.to_thread(handle.write, chunk)
                    size += len(chunk)
                await asyncio.to_thread(_flush, handle)
            finally:
                await asyncio.to_thread(handle.close)
            await self._commit(partial, target)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        return size

    async def _commit(self, partial: Path, target: Path) -> None:
        """Give the finished temporary file its final name, only if no upload took it first.

        ``os.link`` fails if ``target`` exists (``os.replace`` would overwrite bytes already
        confirmed to another client); the temporary name is removed by the caller.
        """
        try:
            await asyncio.to_thread(os.link, partial, target)
        except FileExistsError:
            raise UploadRejected(ALREADY_UPLOADED, 409) from None

    async def _chunks(self, tenant: str, attachment_id: str) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(self.path(tenant, attachment_id).open, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"Attachment {attachment_id} has no stored bytes") from None
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def _delete(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        for attachment_id in attachment_ids:
            await asyncio.to_thread(self.path(tenant, attachment_id).unlink, missing_ok=True)

    async def _has_bytes(self, tenant: str, attachment_id: str) -> bool:
        return await asyncio.to_thread(self.path(tenant, attachment_id).is_file)

    async def _delete_strays(self, cutoff: datetime) -> int:
        """Delete files with no metadata last written before ``cutoff``; return how many.

        Files younger than ``upload_ttl`` are kept whatever ``cutoff`` says (a direct upload
        writes its bytes before its metadata). A tenant's files are listed before its
        attachments are read again, so no file whose metadata exists then is deleted.
        Temporary files of uploads abandoned as long ago are removed too (not counted). Only
        names shaped like this store's are touched.
        """
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=timezone.utc)
        young = datetime.now(timezone.utc) - timedelta(seconds=self.upload_ttl)
        before = min(cutoff, young).timestamp()
        known: set[str] = set()  # the folders of tenants with metadata
        deleted = 0
        async with aclosing(self._stored_by_tenant()) as tenants:
            async for tenant, ids in tenants:
                folder = self._folder(tenant)
                known.add(folder.name)
                strays = await asyncio.to_thread(_old_files, folder, before)
                strays -= {self.path(tenant, a).name for a in ids}
                if strays - _temporary(strays):  # re-read: what has metadata now is kept
                    strays -= {self.path(tenant, a).name for a in await self._stored_ids(tenant)}
                deleted += await asyncio.to_thread(_unlink, folder, strays)
        for folder in await asyncio.to_thread(_tenant_folders, self.root):
            if folder.name not in known:
                strays = await asyncio.to_thread(_old_files, folder, before)
                deleted += await asyncio.to_thread(_unlink, folder, strays)
        return deleted

    async def tenant_files(self, tenant: str) -> list[str]:
        """The names of the attachment files stored for ``tenant`` (not unfinished uploads)."""
        names = await asyncio.to_thread(_old_files, self._folder(tenant), math.inf)
        return sorted(names - _temporary(names))

    async def delete_tenant_files(self, tenant: str) -> int:
        """Delete every file of ``tenant`` (unfinished uploads too) and its folder; return how
        many attachment files went. An upload of the tenant in flight fails."""
        folder = self._folder(tenant)
        names = await asyncio.to_thread(_old_files, folder, math.inf)
        deleted = await asyncio.to_thread(_unlink, folder, names)
        await asyncio.to_thread(_remove_if_empty, folder)
        return deleted

    def _upload_descriptor(
        self, tenant: str, attachment_id: str, mime_type: str, size: int
    ) -> AttachmentUploadDescriptor:
        url = self.signed_url("upload", self.upload_method, tenant, attachment_id, self.upload_ttl)
        return AttachmentUploadDescriptor(url=AnyUrl(url), method=self.upload_method)

    def _preview_url(self, tenant: str, attachment_id: str) -> str:
        return self.signed_url("files", "GET", tenant, attachment_id, self.preview_ttl)

    def download_url(self, attachment_id: str, context: TContext, ttl: int = 3600) -> str:
        """A signed URL that downloads one of the context's attachments."""
        tenant = self.tenant_of(context)
        return self.signed_url(
            "files", "GET", tenant, check_id(attachment_id, "attachment id"), ttl
        )

    def signed_url(self, route: str, method: str, tenant: str, attachment_id: str, ttl: int) -> str:
        """``base_url/route/id?signature`` granting ``method`` for ``ttl`` seconds."""
        query = self.signer.query(Grant(method, tenant, attachment_id), ttl)
        return f"{self.base_url}/{route}/{quote(attachment_id, safe='')}?{query}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


_TENANT_FOLDER = re.compile(r"t_[0-9a-f]{40}")
_FILE = re.compile(r"a_[0-9a-f]{40}|\.a_[0-9a-f]{40}\.[0-9a-f]{32}\.part")


def _tenant_folders(root: Path) -> list[Path]:
    """The tenant folders under ``root`` (nothing else there is this store's)."""
    if not root.is_dir():
        return []
    with os.scandir(root) as entries:
        return [
            Path(entry.path)
            for entry in entries
            if _TENANT_FOLDER.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]


def _old_files(folder: Path, before: float) -> set[str]:
    """Names of attachment and temporary files in ``folder`` last written before ``before``."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if _is_old_file(entry, before)}
    except FileNotFoundError:
        return set()


def _is_old_file(entry: os.DirEntry[str], before: float) -> bool:
    if not _FILE.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
        return False
    try:
        return entry.stat(follow_symlinks=False).st_mtime < before
    except FileNotFoundError:  # deleted meanwhile
        return False


def _temporary(names: set[str]) -> set[str]:
    return {name for name in names if name.endswith(".part")}


def _unlink(folder: Path, names: set[str]) -> int:
    """Delete ``names`` in ``folder``; return how many attachment (not temporary) files went."""
    deleted = 0
    for name in sorted(names):
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            continue
        deleted += not name.endswith(".part")
    return deleted


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` unless something is in it (a file being uploaded right now)."""
    with contextlib.suppress(OSError):  # missing, or not empty
        folder.rmdir()


def _flush(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())
