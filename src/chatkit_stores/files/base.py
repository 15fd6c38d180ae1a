"""What the disk and S3 attachment stores share: limits, ids, models, and the metadata link.

An attachment store keeps the bytes; the ``Store`` it is built with keeps the metadata. Building
one links the two (when the store is one of this package's): ``delete_thread`` then deletes the
thread's bytes too, and preview URLs are re-signed whenever metadata or items are loaded.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import uuid
from abc import abstractmethod
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
)
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypedDict, TypeVar

from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from pydantic import AnyUrl

from ..audit import (
    BYTES_DELETE,
    BYTES_UPLOAD,
    OK,
    AuditEvent,
    AuditHook,
    audit_scope,
    audited_stream,
    clip,
    current_via,
    emit,
    error_name,
    outcome_of,
)
from ..base import StoreBase, check_id, check_options, is_key
from ..exceptions import UploadRejected as UploadRejected  # with its audit outcome
from ..telemetry import (
    ATTACHMENTS_BACKEND,
    ATTACHMENTS_PROFILE,
    Attributes,
    Profile,
    Telemetry,
    operation,
    traced_stream,
)
from ..telemetry import DEFAULT as DEFAULT_TELEMETRY
from ..tenancy import TenantContext, TenantResolver, check_tenant, default_tenant

if TYPE_CHECKING:
    from typing_extensions import Unpack

TContext = TypeVar("TContext")

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
DEFAULT_PREVIEW_TTL = 3600
DEFAULT_UPLOAD_TTL = 900
PREVIEW_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})
"""Images shown inline as previews; SVG is served as a download (it can carry script)."""
ALREADY_UPLOADED = "this attachment was already uploaded"
KEYS_PAGE = 1000
"""How many ``(tenant, id)`` a stray sweep reads from the metadata store at a time."""
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class AttachmentOptions(TypedDict, total=False):
    """The keyword options every attachment store takes (one place: add an option here)."""

    tenant: TenantResolver | None
    """Turns a request context into a tenant key (default: the linked store's resolver)."""
    max_bytes: int
    """The largest upload accepted (``DEFAULT_MAX_BYTES``)."""
    allowed_mime_types: Collection[str] | None
    """The MIME types accepted; ``None``: any."""
    preview_ttl: int
    """How long a preview or download URL stays valid, in seconds."""
    upload_ttl: int
    """How long an upload URL stays valid, in seconds."""
    audit: AuditHook | None
    """Called with an ``AuditEvent`` for byte deletes, reads and uploads; default: the store's."""
    telemetry: Telemetry | None
    """Where spans and durations go; default: the linked store's."""


class AttachmentStoreBase(AttachmentStore[TContext], Generic[TContext]):
    """Limits, ids, attachment models and metadata updates shared by disk and S3.

    ``audit`` and ``telemetry`` default to those of the linked store (when it is one of this
    package's); see ``docs/observability.md``.
    """

    telemetry_profile: ClassVar[Profile] = ATTACHMENTS_PROFILE
    backend: ClassVar[str] = "attachments"

    def __init__(self, store: Store[TContext], **options: Unpack[AttachmentOptions]) -> None:
        check_options(self, options, AttachmentOptions)
        tenant = options.get("tenant")
        max_bytes = options.get("max_bytes", DEFAULT_MAX_BYTES)
        allowed_mime_types = options.get("allowed_mime_types")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.store = store
        self.max_bytes = max_bytes
        self.allowed_mime_types = (
            None if allowed_mime_types is None else frozenset(m.lower() for m in allowed_mime_types)
        )
        self.preview_ttl = options.get("preview_ttl", DEFAULT_PREVIEW_TTL)
        self.upload_ttl = options.get("upload_ttl", DEFAULT_UPLOAD_TTL)
        self._audit = options.get("audit")
        self._telemetry = options.get("telemetry")
        if tenant is not None:
            self._resolve_tenant = tenant
        elif isinstance(store, StoreBase):
            self._resolve_tenant = store.tenant_of
        else:
            self._resolve_tenant = default_tenant
        if isinstance(store, StoreBase):
            store.link_attachment_store(self)

    @property
    def audit(self) -> AuditHook | None:
        """The audit hook: this store's own, else the linked metadata store's."""
        if self._audit is None and isinstance(self.store, StoreBase):
            return self.store.audit
        return self._audit

    @audit.setter
    def audit(self, hook: AuditHook | None) -> None:
        self._audit = hook

    @property
    def telemetry(self) -> Telemetry:
        """Where spans go: this store's own, else the linked metadata store's, else global."""
        if self._telemetry is not None:
            return self._telemetry
        if isinstance(self.store, StoreBase):
            return self.store.telemetry
        return DEFAULT_TELEMETRY

    @telemetry.setter
    def telemetry(self, telemetry: Telemetry | None) -> None:
        self._telemetry = telemetry

    def telemetry_attributes(self) -> Attributes:
        """Span attributes naming the backend (and, for S3, bucket and endpoint)."""
        return {ATTACHMENTS_BACKEND: self.backend}

    # what each backend provides

    @abstractmethod
    async def _write(
        self, tenant: str, attachment_id: str, mime_type: str, chunks: AsyncIterable[bytes]
    ) -> int:
        """Store the bytes (all or nothing, at most ``max_bytes``); return the size.

        The bytes are committed exclusively: if bytes of this attachment are already stored
        (another upload finished first), nothing is stored or changed and
        ``UploadRejected`` (409) is raised.
        """

    @abstractmethod
    def _chunks(self, tenant: str, attachment_id: str) -> AsyncIterator[bytes]:
        """Yield the stored bytes; raise ``NotFoundError`` if there are none."""

    @abstractmethod
    async def _delete(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        """Delete stored bytes; missing ones are ignored."""

    @abstractmethod
    def _upload_descriptor(
        self, tenant: str, attachment_id: str, mime_type: str, size: int
    ) -> AttachmentUploadDescriptor:
        """Where and how the client uploads the ``size`` bytes of a two-phase upload."""

    @abstractmethod
    def _preview_url(self, tenant: str, attachment_id: str) -> str:
        """A URL, valid for ``preview_ttl``, that shows the image."""

    async def _has_bytes(self, tenant: str, attachment_id: str) -> bool:
        """Whether the bytes of a two-phase upload arrived (S3 checks with a HEAD)."""
        return False

    async def _delete_strays(self, cutoff: datetime) -> int:
        """Delete bytes with no metadata, written before ``cutoff``; return how many."""
        return 0

    async def _stored_by_tenant(
        self, after: tuple[str, str] | None = None
    ) -> AsyncGenerator[tuple[str, set[str]], None]:
        """Each tenant with attachment metadata and its attachment ids, after ``after``."""
        page = self._attachment_keys()
        tenant: str | None = None
        ids: set[str] = set()
        while batch := await page(after, limit=KEYS_PAGE):
            if batch[-1] == after:
                raise RuntimeError(f"{type(self.store).__name__}.attachment_keys ignored after")
            for key_tenant, attachment_id in batch:
                if key_tenant != tenant:
                    if tenant is not None:
                        yield tenant, ids
                    tenant, ids = key_tenant, set()
                ids.add(attachment_id)
            after = batch[-1]
        if tenant is not None:
            yield tenant, ids

    def _attachment_keys(self) -> Callable[..., Awaitable[list[tuple[str, str]]]]:
        """The metadata store's ``attachment_keys`` (this package's stores have it)."""
        page = getattr(self.store, "attachment_keys", None)
        if page is None:
            raise TypeError(f"{type(self.store).__name__} cannot list attachment keys")
        return page  # type: ignore[no-any-return]

    async def _stored_ids(self, tenant: str) -> set[str]:
        """The ids of ``tenant``'s attachments with metadata, read now.

        Stops at the first page that ends the tenant's ids (one read for up to ``KEYS_PAGE``
        attachments), so that no await point separates the read from what the caller does next.
        """
        page = self._attachment_keys()
        ids: set[str] = set()
        after = (tenant, "")
        while batch := await page(after, limit=KEYS_PAGE):
            ids.update(attachment_id for key_tenant, attachment_id in batch if key_tenant == tenant)
            if len(batch) < KEYS_PAGE or batch[-1][0] != tenant:
                break
            after = batch[-1]
        return ids

    # ChatKit's AttachmentStore

    def generate_attachment_id(self, mime_type: str, context: TContext) -> str:
        """Return a new ``atc_`` id with 128 random bits."""
        return f"atc_{uuid.uuid4().hex}"

    @operation()
    async def create_attachment(
        self, input: AttachmentCreateParams, context: TContext
    ) -> Attachment:
        """Check the declared type and size; return the attachment with its upload descriptor."""
        return await self._create_attachment(input, context)

    async def _create_attachment(
        self, input: AttachmentCreateParams, context: TContext
    ) -> Attachment:
        tenant = self.tenant_of(context)
        mime_type = self.check_mime_type(input.mime_type)
        self.check_size(input.size)
        attachment_id = self.generate_attachment_id(mime_type, context)
        descriptor = self._upload_descriptor(tenant, attachment_id, mime_type, input.size)
        return self._attachment(tenant, attachment_id, input.name, mime_type, descriptor)

    @operation()
    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Delete the bytes of one of the context's attachments; others' ids do nothing."""
        try:
            tenant = self.tenant_of(context)
        except Exception as error:
            await self.emit_audit(BYTES_DELETE, None, attachment_id, error)
            raise
        await self._delete_bytes(tenant, [attachment_id])

    # direct uploads and reading back

    @operation()
    async def upload(
        self,
        content: bytes | AsyncIterable[bytes] | AsyncReadable | Readable,
        *,
        name: str,
        mime_type: str,
        context: TContext,
        thread_id: str | None = None,
    ) -> Attachment:
        """Store bytes from the app's own endpoint; save and return the finished attachment.

        ``content`` is bytes, an async iterable of chunks, a file with ``async read(n)``
        (e.g. a FastAPI ``UploadFile``) or a binary file with a plain ``read(n)`` (``open(path,
        "rb")``, ``io.BytesIO``; read in a worker thread). It is read in chunks, never whole.
        """
        tenant = self.tenant_of(context)
        attachment_id: str | None = None
        try:
            mime_type = self.check_mime_type(mime_type)
            attachment_id = self.generate_attachment_id(mime_type, context)
            await self._write(tenant, attachment_id, mime_type, _as_chunks(content))
            attachment = self._attachment(tenant, attachment_id, name, mime_type, None)
            attachment.thread_id = None if thread_id is None else check_id(thread_id, "thread id")
            try:
                await self.store.save_attachment(attachment, context)
            except BaseException:
                await self._delete(tenant, [attachment_id])
                raise
        except BaseException as error:
            await self.emit_audit(BYTES_UPLOAD, tenant, attachment_id, error)
            raise
        await self.emit_audit(BYTES_UPLOAD, tenant, attachment.id, None)
        return attachment

    @traced_stream()
    def open(self, attachment_id: str, context: TContext) -> AsyncIterator[bytes]:
        """Stream an attachment's bytes (raises ``NotFoundError`` when iterated, if missing).

        Audited (``attachment.bytes.read``) when the first chunk is read.
        """
        return self._open(attachment_id, context)

    def _open(self, attachment_id: str, context: TContext) -> AsyncIterator[bytes]:
        tenant = self.tenant_of(context)
        if not is_key(attachment_id):  # no upload could have this id
            chunks = _missing(attachment_id)
        else:
            chunks = self._chunks(tenant, attachment_id)
        return audited_stream(
            self.audit,
            chunks,
            tenant=tenant,
            store=type(self).__name__,
            attachment_id=attachment_id,
        )

    @operation()
    async def read(self, attachment_id: str, context: TContext) -> bytes:
        """Return an attachment's bytes (for ``attachment_to_message_content``)."""
        return b"".join([chunk async for chunk in self._open(attachment_id, context)])

    # two-phase uploads arriving, and presenting metadata

    @operation()
    async def receive(
        self, tenant: str, attachment_id: str, chunks: AsyncIterable[bytes]
    ) -> Attachment:
        """Store a two-phase upload's bytes and mark its metadata uploaded (audited).

        Of two uploads to one URL, the first to commit its bytes wins; the other gets
        ``UploadRejected`` (409) and stores nothing. If the attachment is deleted while its
        bytes stream, the delete wins: the bytes are removed and ``NotFoundError`` raised.
        """
        try:
            context: Any = TenantContext(tenant)
            attachment = await self.store.load_attachment(attachment_id, context)
            if attachment.upload_descriptor is None:
                raise UploadRejected(ALREADY_UPLOADED, 409)
            await self._write(tenant, attachment_id, attachment.mime_type, chunks)
            completed = await self._complete(tenant, attachment)
            if completed is None:  # deleted while the bytes streamed: the delete wins
                await self._delete(tenant, [attachment_id])
                raise NotFoundError(f"Attachment {attachment_id} was deleted during its upload")
            done = completed[0]
        except BaseException as error:
            await self.emit_audit(BYTES_UPLOAD, tenant, attachment_id, error)
            raise
        await self.emit_audit(BYTES_UPLOAD, tenant, attachment_id, None)
        return done

    @operation()
    async def present(self, tenant: str, attachment: Attachment, *, check: bool) -> Attachment:
        """Return the attachment as it should be shown now: fresh preview URL, upload state.

        With ``check``, a pending two-phase upload whose bytes have arrived is completed
        (audited as an upload ``via="presigned_url"``).
        """
        return await self._present(tenant, attachment, check=check)

    async def _present(self, tenant: str, attachment: Attachment, *, check: bool) -> Attachment:
        if attachment.upload_descriptor is not None:
            if not check or not await self._has_bytes(tenant, attachment.id):
                return attachment
            completed = await self._complete(tenant, attachment)
            if completed is None:  # deleted since it was loaded
                return attachment
            done, by_us = completed
            if by_us:
                await self.emit_audit(BYTES_UPLOAD, tenant, done.id, None, via="presigned_url")
            return done
        if isinstance(attachment, ImageAttachment):
            url = AnyUrl(self._preview_url(tenant, attachment.id))
            return attachment.model_copy(update={"preview_url": url})
        return attachment

    async def _complete(
        self, tenant: str, attachment: Attachment
    ) -> tuple[Attachment, bool] | None:
        """Mark the metadata uploaded once the bytes are stored; None if it is gone.

        Returns the attachment and whether this call was the one that marked it. On this
        package's stores it is one atomic step that cannot bring a deleted attachment back;
        other stores get the copy loaded before the upload saved back.
        """
        if not isinstance(self.store, StoreBase):
            done = self._finished(tenant, attachment)
            await self.store.save_attachment(done, TenantContext(tenant))  # type: ignore[arg-type]
            return done, True
        marked = False

        def finish(stored: Attachment) -> Attachment:
            nonlocal marked
            marked = stored.upload_descriptor is not None
            return self._finished(tenant, stored)

        updated = await self.store.update_attachment(tenant, attachment.id, finish)
        return None if updated is None else (updated, marked)

    @operation()
    async def delete_orphans(
        self,
        older_than: timedelta = timedelta(days=1),
        *,
        dry_run: bool = False,
        on_orphan: Callable[[str, str], object] | None = None,
    ) -> int:
        """Delete attachments (bytes and metadata) never put in a thread within ``older_than``.

        Each listed orphan's metadata is deleted only if it is still in no thread at that
        moment (one conditional statement), and its bytes only then: an attachment sent in a
        message while the sweep runs is kept. Bytes with no metadata at all, older than both
        ``older_than`` and ``upload_ttl``, are deleted too where the backend can find them.
        Needs a metadata store with ``orphaned_attachments`` and ``delete_orphan`` (this
        package's stores have both). Returns how many were deleted.

        ``on_orphan(tenant, attachment_id)`` is called for each orphan deleted (not for bytes
        without metadata). ``dry_run`` deletes nothing: it calls ``on_orphan`` for each orphan
        there is now, and returns how many (their keys are read in one list).
        """
        find = getattr(self.store, "orphaned_attachments", None)
        delete = getattr(self.store, "delete_orphan", None)
        if find is None or delete is None:
            raise TypeError(
                f"{type(self.store).__name__} cannot delete orphaned attachments safely: "
                "it needs orphaned_attachments() and delete_orphan()"
            )
        cutoff = datetime.now(timezone.utc) - older_than
        if dry_run:
            orphans = await find(cutoff, limit=sys.maxsize)
            for tenant, attachment_id in orphans:
                if on_orphan is not None:
                    on_orphan(tenant, attachment_id)
            return len(orphans)
        deleted = 0
        previous: list[tuple[str, str]] = []
        with audit_scope("orphans"):
            while batch := await find(cutoff, limit=500):
                if batch == previous:  # the store kept them: stop instead of looping
                    raise RuntimeError(
                        f"{type(self.store).__name__}.delete_orphan left orphans in place "
                        f"(e.g. {batch[0]}) that orphaned_attachments still lists"
                    )
                for tenant, attachment_id in batch:
                    if await delete(attachment_id, TenantContext(tenant), cutoff):
                        await self._delete_bytes(tenant, [attachment_id])
                        deleted += 1
                        if on_orphan is not None:
                            on_orphan(tenant, attachment_id)
                previous = batch
            deleted += await self._delete_strays(cutoff)
        return deleted

    @operation()
    async def delete_bytes(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        """Delete the bytes of attachments whose metadata is gone (``delete_thread``); audited."""
        await self._delete_bytes(tenant, attachment_ids)

    async def _delete_bytes(self, tenant: str, attachment_ids: Iterable[str]) -> None:
        ids = list(attachment_ids)
        try:
            await self._delete(tenant, [a for a in ids if is_key(a)])
        except BaseException as error:
            for attachment_id in ids:
                await self.emit_audit(BYTES_DELETE, tenant, attachment_id, error)
            raise
        for attachment_id in ids:
            await self.emit_audit(BYTES_DELETE, tenant, attachment_id, None)

    async def emit_audit(
        self,
        action: str,
        tenant: str | None,
        attachment_id: str | None,
        error: BaseException | None,
        via: str | None = None,
    ) -> None:
        """Emit one audit event about an attachment (``error``: the operation failed)."""
        event = AuditEvent(
            action,
            OK if error is None else outcome_of(error),
            tenant,
            type(self).__name__,
            via or current_via(),
            attachment_id=clip(attachment_id),
            error=error_name(error),
        )
        await emit(self.audit, event, failing=error is not None)

    # checks and helpers

    def tenant_of(self, context: TContext) -> str:
        """Return the tenant of ``context`` (the linked store's resolver by default)."""
        if isinstance(context, TenantContext):
            return check_tenant(context.tenant_id)
        return check_tenant(self._resolve_tenant(context))

    def check_mime_type(self, mime_type: str) -> str:
        """Return the normalized MIME type, or raise ``UploadRejected`` (415)."""
        normalized = mime_type.split(";", 1)[0].strip().lower()
        if not _MIME.match(normalized):
            raise UploadRejected(f"not a MIME type: {mime_type!r:.100}", 415)
        if self.allowed_mime_types is not None and normalized not in self.allowed_mime_types:
            raise UploadRejected(f"files of type {normalized} are not accepted", 415)
        return normalized

    def check_size(self, size: int) -> None:
        """Raise ``UploadRejected`` (413) for a size above ``max_bytes``."""
        if size > self.max_bytes:
            raise UploadRejected(f"{size} bytes is more than the limit of {self.max_bytes}", 413)
        if size < 0:
            raise UploadRejected(f"negative size {size}", 413)

    def _attachment(
        self,
        tenant: str,
        attachment_id: str,
        name: str,
        mime_type: str,
        descriptor: AttachmentUploadDescriptor | None,
    ) -> Attachment:
        name = _safe_name(name)
        if mime_type in PREVIEW_TYPES:
            return ImageAttachment(
                id=attachment_id,
                name=name,
                mime_type=mime_type,
                preview_url=AnyUrl(self._preview_url(tenant, attachment_id)),
                upload_descriptor=descriptor,
            )
        return FileAttachment(
            id=attachment_id, name=name, mime_type=mime_type, upload_descriptor=descriptor
        )

    def _finished(self, tenant: str, attachment: Attachment) -> Attachment:
        update: dict[str, Any] = {"upload_descriptor": None}
        if isinstance(attachment, ImageAttachment):
            update["preview_url"] = AnyUrl(self._preview_url(tenant, attachment.id))
        return attachment.model_copy(update=update)


def _safe_name(name: str) -> str:
    """A display name: no path, no control characters, at most 255 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip() or "file"
    return name[:255]


class AsyncReadable(Protocol):
    """A file-like object with an async ``read`` (a FastAPI/Starlette ``UploadFile``)."""

    async def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes."""
        ...


class Readable(Protocol):
    """A binary file opened for reading (``open(path, "rb")``, ``io.BytesIO``)."""

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes."""
        ...


READ_CHUNK = 256 * 1024


async def _missing(attachment_id: str) -> AsyncIterator[bytes]:
    raise NotFoundError(f"Attachment {attachment_id!r:.80} has no stored bytes")
    yield b""  # pragma: no cover - makes this an async generator


async def _as_chunks(
    content: bytes | AsyncIterable[bytes] | AsyncReadable | Readable,
) -> AsyncIterator[bytes]:
    """The chunks of ``upload``'s content; a file's own ``read`` wins over its iteration."""
    if isinstance(content, bytes | bytearray | memoryview):
        yield bytes(content)
        return
    read = getattr(content, "read", None)
    if read is None:
        if not isinstance(content, AsyncIterable):
            raise TypeError(
                "upload() takes bytes, a binary file or an async iterable of bytes, "
                f"not {type(content).__name__}"
            )
        async for chunk in content:
            yield _binary(chunk)
    elif inspect.iscoroutinefunction(read):
        while chunk := _binary(await read(READ_CHUNK)):
            yield chunk
    else:  # a blocking read: off the event loop
        while chunk := _binary(await asyncio.to_thread(read, READ_CHUNK)):
            yield chunk


def _binary(chunk: object) -> bytes:
    """``chunk`` as bytes; a ``str`` means a file opened in text mode."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    hint = " (open the file in binary mode, 'rb')" if isinstance(chunk, str) else ""
    raise TypeError(f"upload() reads bytes, got {type(chunk).__name__}{hint}")


async def limited(
    chunks: AsyncIterable[bytes], max_bytes: int, *, too_large: str | None = None
) -> AsyncIterator[bytes]:
    """Pass chunks through; raise ``UploadRejected`` (413, ``too_large``) past ``max_bytes``."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            why = too_large or f"the upload is larger than the limit of {max_bytes} bytes"
            raise UploadRejected(why, 413)
        yield chunk


__all__ = ["AttachmentStoreBase", "NotFoundError", "TenantContext", "UploadRejected", "limited"]
