"""The Starlette app of a ``DiskAttachmentStore``: signed uploads in, signed files out.

- ``POST|PUT /upload/{id}``: a two-phase upload. POST takes ``multipart/form-data`` with a
  ``file`` field (what the ChatKit client sends), PUT the raw body. Limits are enforced while
  the body streams, with or without a Content-Length: the file at most ``max_bytes``, the whole
  body at most that plus 64 KiB of multipart framing (other fields count); a rejected upload
  answers 413/415 and leaves no file. A bad or non-ASCII signature answers 403. Of two uploads to
  one URL the first to store its bytes wins, the other answers 409; an upload whose
  attachment (or its thread) was deleted while it streamed answers 404 and stores nothing.
- ``GET /files/{id}``: the bytes, with the stored type, ``nosniff``, a safe
  ``Content-Disposition``; previewable images inline and with CORS, everything else as a download.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chatkit.store import NotFoundError

from ..audit import BYTES_READ, BYTES_UPLOAD, audit_scope
from ..tenancy import TenantContext
from .base import PREVIEW_TYPES, UploadRejected, limited
from .signing import SignatureError

SIGNED_URL = "signed_url"

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .disk import DiskAttachmentStore

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "DiskAttachmentStore.asgi_app() needs Starlette: pip install 'chatkit-stores[files]'"
    ) from exc


def disk_app(disk: DiskAttachmentStore[Any]) -> ASGIApp:
    """Build the upload/download app for ``disk``."""

    async def upload(request: Request) -> Response:
        with audit_scope(SIGNED_URL):
            return await _upload(request)

    async def _upload(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        if request.method != disk.upload_method:
            return _error(403, f"this URL accepts {disk.upload_method} only")
        tenant: str | None = None
        receiving = False  # from then on, receive() audits the upload itself
        try:
            grant = disk.signer.verify(request.method, attachment_id, dict(request.query_params))
            tenant = grant.tenant
            # The whole body is bounded, declared or not: a PUT body is the file; a multipart
            # body may add boundaries and part headers, not megabytes of other fields.
            limit = disk.max_bytes + (0 if request.method == "PUT" else _MULTIPART_SLACK)
            if _content_length(request.headers.get("content-length")) > limit:
                raise UploadRejected(_TOO_LARGE, 413)
            body = limited(request.stream(), limit, too_large=_TOO_LARGE)
            if request.method == "PUT":
                _check_declared_type(disk, request.headers.get("content-type"))
                chunks: AsyncIterator[bytes] = body
            else:
                chunks = _multipart_file(
                    request.headers.get("content-type"),
                    body,
                    lambda t: _check_declared_type(disk, t),
                )
            receiving = True
            attachment = await disk.receive(grant.tenant, attachment_id, chunks)
        except BaseException as error:
            if not receiving:
                await disk.emit_audit(BYTES_UPLOAD, tenant, attachment_id, error)
            return _upload_error(error)
        return JSONResponse(attachment.model_dump(mode="json", exclude={"metadata"}))

    async def download(request: Request) -> Response:
        with audit_scope(SIGNED_URL):
            return await _download(request)

    async def _download(request: Request) -> Response:
        attachment_id = request.path_params["attachment_id"]
        tenant: str | None = None
        chunks: AsyncIterator[bytes] | None = None  # once opened, open() audits the read
        try:
            grant = disk.signer.verify("GET", attachment_id, dict(request.query_params))
            tenant = grant.tenant
            context: Any = TenantContext(grant.tenant)
            attachment = await disk.store.load_attachment(attachment_id, context)
            chunks = disk.open(attachment_id, context)
            first = await anext(chunks, b"")  # raises NotFoundError before headers go out
        except (SignatureError, NotFoundError) as error:
            if chunks is None:
                await disk.emit_audit(BYTES_READ, tenant, attachment_id, error)
            if isinstance(error, SignatureError):
                return _error(403, str(error))
            return _error(404, "no such file")
        inline = attachment.mime_type in PREVIEW_TYPES
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": _disposition(attachment.name, inline),
            "Cache-Control": "private, max-age=300",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        if inline:
            headers["Access-Control-Allow-Origin"] = "*"
        return StreamingResponse(
            _prepend(first, chunks), media_type=attachment.mime_type, headers=headers
        )

    return Starlette(
        routes=[
            Route("/upload/{attachment_id}", upload, methods=["POST", "PUT"]),
            Route("/files/{attachment_id}", download, methods=["GET"]),
        ]
    )


def _upload_error(error: BaseException) -> Response:
    """The answer to a failed upload; unexpected errors propagate."""
    if isinstance(error, SignatureError):
        return _error(403, str(error))
    if isinstance(error, NotFoundError):
        return _error(404, "no such attachment")
    if isinstance(error, UploadRejected):
        return _error(error.status, str(error))
    if isinstance(error, ClientDisconnect):
        return _error(400, "the client went away before the upload finished")
    if isinstance(error, ValueError):
        return _error(400, str(error))
    raise error


_MULTIPART_SLACK = 64 * 1024
"""Room for multipart boundaries and part headers beside the file's ``max_bytes``."""
_TOO_LARGE = "the upload is larger than the limit"
"""What a refused body is told (the limit includes the multipart room, so it is not named)."""


def _content_length(header: str | None) -> int:
    """The declared body size (0 if absent); the bytes are counted anyway while they stream."""
    try:
        return int(header or 0)
    except ValueError:
        raise UploadRejected(f"Content-Length is not a number: {header!r:.40}", 400) from None


def _check_declared_type(disk: DiskAttachmentStore[Any], content_type: str | None) -> None:
    """Refuse (415) an upload whose own Content-Type is not an accepted type."""
    if content_type and disk.allowed_mime_types is not None:
        disk.check_mime_type(content_type)


async def _multipart_file(
    header: str | None, body: AsyncIterator[bytes], check_type: Callable[[str | None], None]
) -> AsyncIterator[bytes]:
    """Stream the bytes of the ``file`` field of a multipart body, parsing as it arrives."""
    content_type, options = parse_options_header(header)
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRejected("send multipart/form-data with a 'file' field", 415)
    state: dict[str, Any] = {
        "field": b"",
        "value": b"",
        "name": None,
        "found": False,
        "ended": False,
    }
    pending: list[bytes] = []

    # A header can arrive in pieces (the body streams in network-sized chunks): collect the
    # field and the value, and read them once the header ends.
    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        field, value = state["field"].lower(), state["value"]
        if field == b"content-disposition":
            state["name"] = parse_options_header(value)[1].get(b"name")
        elif field == b"content-type":
            state["type"] = value.decode("latin-1")
        state["field"] = state["value"] = b""

    def on_part_begin() -> None:
        state["name"] = state["type"] = None

    def on_headers_finished() -> None:
        if state["name"] == b"file":
            if state["found"]:  # a second file would be appended to the first
                raise UploadRejected("the multipart body has more than one 'file' field", 400)
            check_type(state["type"])
            state["found"] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == b"file":
            pending.append(data[start:end])

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_begin": on_part_begin,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": lambda: state.update(ended=True),
        },
    )
    async for chunk in body:
        parser.write(chunk)
        for piece in pending:
            yield piece
        pending.clear()
    parser.finalize()
    if not state["found"]:
        raise UploadRejected("the multipart body has no 'file' field", 415)
    if not state["ended"]:  # cut short: the file may be incomplete
        raise UploadRejected("the multipart body ended before its closing boundary", 400)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def _disposition(name: str, inline: bool) -> str:
    """A Content-Disposition that no file name can break out of."""
    fallback = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in " ._-") else "_" for ch in name
    )
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback or 'file'}\"; filename*=UTF-8''{quote(name, safe='')}"


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
