"""Attachment bytes in an S3 bucket: clients upload to presigned URLs, previews are presigned.

Object keys are ``{prefix}t_{sha256(tenant)}/a_{sha256(attachment_id)}`` (hex digests of the
UTF-8 strings). Tenant and attachment ids are chosen by the app or its users and may hold
``../``, ``/``, any unicode or 255 characters; their digests are fixed-length hex, so a key never
leaves its tenant's folder, two ids never share a key, and every key fits S3's 1024-byte limit
(escaping the raw strings could not: 255 four-byte characters, twice, do not fit). The digests
are not reversible; ``key()`` and ``tenant_prefix()`` compute them, e.g. to delete a tenant.

Every boto3 call runs in a worker thread (``asyncio.to_thread``); the boto3 client is created on
first use, in a thread too, from the usual credential chain unless one is passed in.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import logging
import re
import threading
from collections.abc import AsyncIterable, AsyncIterator, Collection, Coroutine, Iterable
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, AttachmentCreateParams, AttachmentUploadDescriptor
from pydantic import AnyUrl

from ..base import check_id
from ..telemetry import SERVER_ADDRESS, SERVER_PORT, Attributes
from .base import (
    DEFAULT_PREVIEW_TTL,
    DEFAULT_UPLOAD_TTL,
    AttachmentOptions,
    AttachmentStoreBase,
    TContext,
    limited,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 5 * MIB  # peak memory grows by about 4 parts (docs/attachments.md)
MIN_PART_SIZE = 5 * MIB
"""S3's smallest part of a multipart upload (the last part may be smaller)."""
MAX_PARTS = 10_000
MAX_PRESIGN_TTL = 7 * 24 * 3600
"""The longest a SigV4 presigned URL can be valid."""
READ_CHUNK = 1 * MIB
DELETE_BATCH = 1000
UPLOADS_PAGE = 1000
"""In-flight multipart uploads an erasure lists per request (S3's largest page)."""
INSTALL_HINT = "S3AttachmentStore needs boto3: pip install 'chatkit-stores[s3]'"
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})

log = logging.getLogger(__name__)


class S3AttachmentStore(AttachmentStoreBase[TContext]):
    """Keeps attachment bytes in ``bucket`` under ``prefix``; clients upload with presigned PUTs.

    A two-phase upload's descriptor is a presigned PUT URL with the Content-Type and the declared
    size bound into the signature (the client must send the ``headers`` it gives, and exactly
    that many bytes). The bytes go straight to S3; the upload counts as done once a HEAD finds
    the object, at most ``max_bytes`` long, when ChatKit next loads the attachment (an object
    over the limit is deleted). ``upload()`` streams bytes from the app with a multipart upload:
    memory stays a few ``part_size``, whatever the size.

    ``prefix`` is used as given (end it with ``/``); pass ``client`` to use a boto3 client of
    your own, else one is made from ``endpoint_url``, ``region_name`` and the credential chain.
    Give the bucket a lifecycle rule that aborts incomplete multipart uploads: uploads are
    aborted on every failure, but a process killed mid-upload cannot abort its own.
    """

    def __init__(
        self,
        store: Store[TContext],
        bucket: str,
        *,
        prefix: str = "chatkit/",
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        **options: Unpack[AttachmentOptions],
    ) -> None:
        preview_ttl = options.get("preview_ttl", DEFAULT_PREVIEW_TTL)
        upload_ttl = options.get("upload_ttl", DEFAULT_UPLOAD_TTL)
        if not bucket:
            raise ValueError("bucket must be a bucket name")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (S3's minimum)")
        for name, ttl in (("preview_ttl", preview_ttl), ("upload_ttl", upload_ttl)):
            if not 0 < ttl <= MAX_PRESIGN_TTL:
                raise ValueError(f"{name} must be 1 to {MAX_PRESIGN_TTL} seconds, got {ttl}")
        if client is None and importlib.util.find_spec("boto3") is None:
            raise ImportError(INSTALL_HINT)
        super().__init__(store, **options)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.part_size = part_size
        self._client = client
        self._client_lock = threading.Lock()

    backend = "s3"

    def telemetry_attributes(self) -> Attributes:
        """``aws.s3.bucket``, and ``server.*`` of a custom ``endpoint_url``."""
        attributes: Attributes = {**super().telemetry_attributes(), "aws.s3.bucket": self.bucket}
        if self.endpoint_url:
            endpoint = urlsplit(self.endpoint_url)
            if endpoint.hostname:
                attributes[SERVER_ADDRESS] = endpoint.hostname
                attributes[SERVER_PORT] = endpoint.port or (
                    443 if endpoint.scheme == "https" else 80
                )
        return attributes

    # keys and the client

    def tenant_prefix(self, tenant: str) -> str:
        """The key prefix of all of ``tenant``'s objects."""
        return f"{self.prefix}t_{_digest(tenant)}/"

    def key(self, tenant: str, attachment_id: str) -> str:
        """The object key of an attachment: digests of tenant and id, never the raw strings."""
        return f"{self.tenant_prefix(tenant)}a_{_digest(attachment_id)}"

    async def get_client(self) -> Any:
        """The boto3 S3 client, created in a worker thread on first use."""
        if self._client is None:
            return await asyncio.to_thread(self._create_client)
        return self._client

    def _create_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = _new_client(self.endpoint_url, self.region_name)
            return self._client

    def _presign(self, operation: str, params: dict[str, Any], ttl: int) -> str:
        # Signing is local work; the client already exists (create_attachment and present
        # create it in a thread) unless a URL is asked for before any other call.
        client = self._client if self._client is not None else self._create_client()
        url: str = client.generate_presigned_url(
            operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=ttl
        )
        return url

    def download_url(self, attachment_id: str, context: TContext, ttl: int = 3600) -> str:
        """A presigned URL that downloads one of the context's attachments."""
        key = self.key(self.tenant_of(context), check_id(attachment_id, "attachment id"))
        return self._presign(
            "get_object", {"Key": key, "ResponseContentDisposition": "attachment"}, ttl
        )

    # ChatKit's AttachmentStore and AttachmentStoreBase entry points that sign URLs

    async def _create_attachment(
        self, input: AttachmentCreateParams, context: TContext
    ) -> Attachment:
        """The attachment with a presigned PUT of exactly the declared size."""
        await self.get_client()
        return await super()._create_attachment(input, context)

    async def _present(self, tenant: str, attachment: Attachment, *, check: bool) -> Attachment:
        """The attachment with a fresh presigned preview URL and its upload state."""
        await self.get_client()
        return await super()._present(tenant, attachment, check=check)

    # AttachmentStoreBase

    def _upload_descriptor(
        self, tenant: str, attachment_id: str, mime_type: str, size: int
    ) -> AttachmentUploadDescriptor:
        """A presigned PUT with the type and the declared size in its signature.

        The size is signed as ``Content-Length``: S3 refuses a body of any other length (every
        HTTP client sends the header from the body, so ``headers`` need not).
        """
        key = self.key(tenant, attachment_id)
        params = {"Key": key, "ContentType": mime_type, "ContentLength": size}
        url = self._presign("put_object", params, self.upload_ttl)
        return AttachmentUploadDescriptor(
            url=AnyUrl(url), method="PUT", headers={"Content-Type": mime_type}
        )

    def _preview_url(self, tenant: str, attachment_id: str) -> str:
        params = {"Key": self.key(tenant, attachment_id), "ResponseContentDisposition": "inline"}
        return self._presign("get_object", params, self.preview_ttl)

    async def _has_bytes(self, tenant: str, attachment_id: str) -> bool:
        client = await self.get_client()
        target = {"Bucket": self.bucket, "Key": self.key(tenant, attachment_id)}
        try:
            head = await asyncio.to_thread(client.head_object, **target)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise
        if int(head.get("ContentLength", 0)) > self.max_bytes:
            log.warning("deleting an upload over the %d-byte limit: %s", self.max_bytes, target)
            await asyncio.to_thread(client.delete_object, **target)
            return False
        return True

    async def _write(
        self, tenant: str, attachment_id: str, mime_type: str, chunks: AsyncIterable[bytes]
    ) -> int:
        client = await self.get_client()
        upload = _Upload(client, self.bucket, self.key(tenant, attachment_id), mime_type)
        part_size = max(self.part_size, -(-self.max_bytes // MAX_PARTS))
        buffer = bytearray()
        size = 0
        try:
            async for chunk in limited(chunks, self.max_bytes):
                buffer += chunk
                size += len(chunk)
                if len(buffer) < part_size:
                    continue
                start = 0
                while len(buffer) - start >= part_size:
                    await upload.part(buffer[start : start + part_size])
                    start += part_size
                del buffer[:start]
            await upload.finish(buffer)
        except BaseException:
            await _unstoppable(upload.discard())
            raise
        return size

    async def _chunks(self, tenant: str, attachment_id: str) -> AsyncIterator[bytes]:
        client = await self.get_client()
        target = {"Bucket": self.bucket, "Key": self.key(tenant, attachment_id)}
        try:
            response = await asyncio.to_thread(client.get_object, **target)
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"Attachment {attachment_id} has no stored bytes") from None
            raise
        body = response["Body"]
        try:
            if int(response.get("ContentLength", 0)) > self.max_bytes:
                raise NotFoundError(f"Attachment {attachment_id} is over the size limit")
            while chunk := await asyncio.to_thread(body.read, READ_CHUNK):
                yield chunk
        finally:
            await asyncio.to_thread(body.close)

    async def _delete(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        keys = list(dict.fromkeys(self.key(tenant, a) for a in attachment_ids))
        if not keys:
            return
        client = await self.get_client()
        if len(keys) == 1:
            await asyncio.to_thread(client.delete_object, Bucket=self.bucket, Key=keys[0])
            return
        await self._delete_keys(client, keys)

    # a tenant's erasure

    async def tenant_files(self, tenant: str) -> list[str]:
        """The keys of the attachment objects stored for ``tenant``."""
        client = await self.get_client()
        return sorted(await self._old_objects(client, self.tenant_prefix(tenant), _NEVER))

    async def delete_tenant_files(self, tenant: str) -> int:
        """Delete every object of ``tenant`` and abort its unfinished multipart uploads (an
        upload in flight fails); return how many attachment objects went."""
        client = await self.get_client()
        folder = self.tenant_prefix(tenant)

        def in_flight() -> list[dict[str, Any]]:  # every page, listed before any is aborted
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": UPLOADS_PAGE}
            )
            return [upload for page in pages for upload in page.get("Uploads", [])]

        for upload in await asyncio.to_thread(in_flight):
            try:
                await asyncio.to_thread(
                    client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
            except Exception as exc:  # completed or aborted since it was listed
                if not _is_code(exc, {"NoSuchUpload"}):
                    raise
        keys = sorted(await self._old_objects(client, folder, _NEVER))
        return await self._delete_keys(client, keys)

    # bytes without metadata: presigned PUTs after a delete, uploads whose metadata was lost

    async def _delete_strays(self, cutoff: datetime) -> int:
        """Delete bytes with no metadata, written before ``cutoff``; return how many.

        Objects younger than ``upload_ttl`` are kept whatever ``cutoff`` says (a direct upload
        writes its bytes before its metadata). A tenant's objects are listed before its
        attachments are read again, so no object whose metadata exists then is deleted. Every
        object under ``prefix`` shaped like this store's keys is taken for this store's own.
        """
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=timezone.utc)
        before = min(cutoff, datetime.now(timezone.utc) - timedelta(seconds=self.upload_ttl))
        client = await self.get_client()
        known: set[str] = set()  # the folders of tenants with metadata
        deleted = 0
        async with aclosing(self._stored_by_tenant()) as tenants:
            async for tenant, ids in tenants:
                folder = self.tenant_prefix(tenant)
                if folder in known:
                    raise RuntimeError(f"attachment_keys listed tenant {tenant!r:.80} twice")
                known.add(folder)
                strays = await self._old_objects(client, folder, before)
                strays -= {self.key(tenant, a) for a in ids}
                if strays:  # listed: now what has metadata is kept, even if it just got some
                    strays -= {self.key(tenant, a) for a in await self._stored_ids(tenant)}
                deleted += await self._delete_keys(client, sorted(strays))
        async for folder in self._tenant_folders(client):
            if folder not in known:
                strays = await self._old_objects(client, folder, before)
                deleted += await self._delete_keys(client, sorted(strays))
        if deleted:
            log.info("deleted %d objects without metadata from s3://%s", deleted, self.bucket)
        return deleted

    async def _listing(self, client: Any, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """The pages of a ``list_objects_v2`` of the bucket, each fetched in a worker thread."""
        more: dict[str, Any] = {}
        while True:
            page = await asyncio.to_thread(
                client.list_objects_v2, Bucket=self.bucket, **params, **more
            )
            yield page
            if not page.get("IsTruncated"):
                return
            more = {"ContinuationToken": page["NextContinuationToken"]}

    async def _old_objects(self, client: Any, folder: str, before: datetime) -> set[str]:
        """The keys of attachment objects in a tenant folder last written before ``before``."""
        shape = re.compile(re.escape(folder) + "a_[0-9a-f]{64}")
        return {
            obj["Key"]
            async for page in self._listing(client, Prefix=folder)
            for obj in page.get("Contents", [])
            if shape.fullmatch(obj["Key"]) and obj["LastModified"] < before
        }

    async def _tenant_folders(self, client: Any) -> AsyncIterator[str]:
        """The tenant folders under ``prefix``: ``{prefix}t_{digest}/``."""
        shape = re.compile(re.escape(self.prefix) + "t_[0-9a-f]{64}/")
        async for page in self._listing(client, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                if shape.fullmatch(common["Prefix"]):
                    yield common["Prefix"]

    async def _delete_keys(self, client: Any, keys: list[str]) -> int:
        """Delete objects in batches (missing ones are fine); return how many were asked."""
        for start in range(0, len(keys), DELETE_BATCH):
            objects = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            response = await asyncio.to_thread(
                client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": objects, "Quiet": True},
            )
            errors = [e for e in response.get("Errors", []) if e.get("Code") not in _MISSING]
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"S3 did not delete {len(errors)} attachment objects, "
                    f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return len(keys)


class _Upload:
    """One object being written: a single PUT, or a multipart upload once a part fills."""

    def __init__(self, client: Any, bucket: str, key: str, mime_type: str) -> None:
        self.client = client
        self.target = {"Bucket": bucket, "Key": key}
        self.mime_type = mime_type
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.creating: asyncio.Task[Any] | None = None
        self.running: asyncio.Task[Any] | None = None
        self.finishing = False

    def _call(self, function: Any, **kwargs: Any) -> asyncio.Task[Any]:
        # A thread cannot be stopped: when the caller is cancelled, the call goes on, and
        # discard() waits for it before cleaning up (else a part could land after the abort).
        self.running = asyncio.ensure_future(asyncio.to_thread(function, **kwargs))
        return self.running

    async def _shielded(self, function: Any, **kwargs: Any) -> Any:
        """``_call``, awaited: a cancellation of the caller does not cancel the call."""
        return await asyncio.shield(self._call(function, **kwargs))

    async def part(self, body: bytes | bytearray) -> None:
        """Upload one full part, starting the multipart upload first if needed."""
        if self.upload_id is None:
            self.creating = self._call(
                self.client.create_multipart_upload, **self.target, ContentType=self.mime_type
            )
            self.upload_id = (await asyncio.shield(self.creating))["UploadId"]
        number = len(self.parts) + 1
        response = await self._shielded(
            self.client.upload_part,
            **self.target,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})

    async def finish(self, rest: bytearray) -> None:
        """Upload what is left and make the object: one PUT, or the multipart completion."""
        if self.upload_id is None:
            self.finishing = True
            await self._shielded(
                self.client.put_object, **self.target, Body=bytes(rest), ContentType=self.mime_type
            )
            return
        if rest:
            await self.part(rest)
        self.finishing = True
        await self._shielded(
            self.client.complete_multipart_upload,
            **self.target,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    async def discard(self) -> None:
        """After a failure: wait for the running call, abort the upload, delete any object."""
        for task in (self.running, self.creating):
            if task is not None:
                await asyncio.wait([task])
        creating = self.creating
        if self.upload_id is None and creating is not None and _succeeded(creating):
            self.upload_id = creating.result()["UploadId"]
        if self.running is not None:
            _succeeded(self.running)  # its error, if any, is the caller's to report
        try:
            if self.upload_id is not None:
                try:
                    await asyncio.to_thread(
                        self.client.abort_multipart_upload, **self.target, UploadId=self.upload_id
                    )
                except Exception as exc:
                    if not _is_code(exc, {"NoSuchUpload"}):
                        raise
            if self.finishing:
                await asyncio.to_thread(self.client.delete_object, **self.target)
        except Exception:
            log.exception("could not clean up a failed upload to %s", self.target)


_CLEANUPS: set[asyncio.Task[None]] = set()


async def _unstoppable(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to the end even if the caller is cancelled while waiting for it."""
    task = asyncio.ensure_future(cleanup)
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)


def _succeeded(task: asyncio.Task[Any]) -> bool:
    """Whether a finished task returned (its exception, if any, counts as retrieved)."""
    return not task.cancelled() and task.exception() is None


def _new_client(endpoint_url: str | None, region_name: str | None) -> Any:
    """A boto3 S3 client from the default credential chain, signing with SigV4."""
    try:
        boto3 = importlib.import_module("boto3")
        config = importlib.import_module("botocore.config")
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        config=config.Config(
            signature_version="s3v4", max_pool_connections=32, retries={"mode": "standard"}
        ),
    )


def _is_code(exc: BaseException, codes: Collection[str]) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return str(response.get("Error", {}).get("Code")) in codes


def _is_missing(exc: BaseException) -> bool:
    return _is_code(exc, _MISSING)


_NEVER = datetime.max.replace(tzinfo=timezone.utc)
"""A time every object was written before."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


__all__ = ["S3AttachmentStore"]
