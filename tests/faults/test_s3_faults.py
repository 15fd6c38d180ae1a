"""S3AttachmentStore while S3 fails: the fault proxy sits between the store and the S3 server.

Requests are matched on their HTTP request line: a part, the completion or a single PUT is cut
mid-body, answered ``500 InternalError``, or done by the server with the answer cut (so the
object exists but the store never hears it). Every retry boto3 makes fails the same way.
Afterwards: a clear boto3 error reached the caller, no multipart upload is left open, no object
is left behind, and no attachment is presented as uploaded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from botocore.exceptions import BotoCoreError, ClientError
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams

from chatkit_stores import MemoryStore, S3AttachmentStore
from conftest import bucket_keys, open_uploads

from .proxy import Action, FaultProxy, Refusal

MIB = 1024 * 1024
CONTEXT = {"user_id": "alice"}
ERROR_BODY = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
HTTP_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(ERROR_BODY), ERROR_BODY)
)
PART_2 = rb"PUT \S*[?&]partNumber=2[& ]"
COMPLETE = rb"POST \S*[?&]uploadId="
SINGLE_PUT = rb"PUT /[^?\s]+ HTTP/1\.1"
PRESIGNED_PUT = rb"PUT /\S*[?&]X-Amz-Signature="
ABORT = rb"DELETE \S*[?&]uploadId="


@pytest_asyncio.fixture
async def s3_proxy(s3_endpoint: str) -> AsyncIterator[FaultProxy]:
    address = urlsplit(s3_endpoint)
    proxy = FaultProxy(address.hostname or "127.0.0.1", address.port or 80)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def s3(
    s3_proxy: FaultProxy, bucket: str, s3_env_credentials: dict[str, str]
) -> S3AttachmentStore[Any]:
    """The store with its own boto3 client (default retries), talking to S3 through the proxy."""
    return S3AttachmentStore(
        MemoryStore(),
        bucket,
        endpoint_url=f"http://127.0.0.1:{s3_proxy.port}",
        region_name=s3_env_credentials["region_name"],
        max_bytes=64 * MIB,
    )


async def saved_attachments(s3: S3AttachmentStore[Any]) -> list[tuple[str, str]]:
    """Every attachment the metadata store holds (none is in a thread in these tests)."""
    later = datetime.now(timezone.utc) + timedelta(days=1)
    return list(await s3.store.orphaned_attachments(later))  # type: ignore[attr-defined]


def assert_clear(error: BaseException) -> None:
    """A boto3 error that names the failure: an S3 error code, or the lost connection."""
    assert isinstance(error, (ClientError, BotoCoreError)), repr(error)
    assert str(error), "the error says what failed"


DIRECT_FAULTS = {
    "part 2 cut mid-body": (12 * MIB, PART_2, Action.CUT_REQUEST, MIB),
    "part 2 answered 500": (12 * MIB, PART_2, Action.REPLY, 0),
    "completion answered 500": (12 * MIB, COMPLETE, Action.REPLY, 0),
    "completion done, answer cut": (12 * MIB, COMPLETE, Action.CUT_REPLY, 0),
    "single PUT cut mid-body": (2 * MIB, SINGLE_PUT, Action.CUT_REQUEST, 64 * 1024),
    "single PUT answered 500": (2 * MIB, SINGLE_PUT, Action.REPLY, 0),
    "single PUT done, answer cut": (2 * MIB, SINGLE_PUT, Action.CUT_REPLY, 0),
}


@pytest.mark.parametrize("fault", list(DIRECT_FAULTS))
@pytest.mark.asyncio
async def test_failed_direct_upload_leaves_nothing(
    s3: S3AttachmentStore[Any], s3_proxy: FaultProxy, s3_client: Any, bucket: str, fault: str
) -> None:
    size, pattern, action, after = DIRECT_FAULTS[fault]
    rule = s3_proxy.on_request(pattern, action, after=after, reply=HTTP_500)
    with pytest.raises(Exception) as raised:
        await s3.upload(b"x" * size, name="big.pdf", mime_type="application/pdf", context=CONTEXT)
    assert rule.hits >= 1, f"the fault never hit: {raised.value!r}"
    print(f"\n[s3] {fault}: {rule.hits} requests hit, raised {type(raised.value).__name__}")
    assert_clear(raised.value)
    await s3_proxy.resume()
    assert open_uploads(s3_client, bucket) == [], "the multipart upload was aborted"
    assert bucket_keys(s3_client, bucket) == [], "no object is left behind"
    assert await saved_attachments(s3) == [], "no attachment is presented as uploaded"
    # S3 answers again: the same store uploads.
    done = await s3.upload(b"y" * size, name="ok.pdf", mime_type="application/pdf", context=CONTEXT)
    assert await s3.read(done.id, CONTEXT) == b"y" * size


@pytest.mark.parametrize("refusal", list(Refusal))
@pytest.mark.asyncio
async def test_upload_while_s3_refuses_connections(
    s3: S3AttachmentStore[Any], s3_proxy: FaultProxy, s3_client: Any, bucket: str, refusal: Refusal
) -> None:
    s3_proxy.refuse(refusal)
    with pytest.raises(Exception) as raised:
        await s3.upload(b"z" * MIB, name="a.pdf", mime_type="application/pdf", context=CONTEXT)
    assert_clear(raised.value)
    await s3_proxy.resume()
    assert bucket_keys(s3_client, bucket) == [] and open_uploads(s3_client, bucket) == []
    assert await saved_attachments(s3) == []


TWO_PHASE_FAULTS = {
    "PUT cut mid-body": (Action.CUT_REQUEST, 64 * 1024),
    "PUT answered 500": (Action.REPLY, 0),
}


@pytest.mark.parametrize("fault", list(TWO_PHASE_FAULTS))
@pytest.mark.asyncio
async def test_failed_two_phase_put_leaves_the_attachment_pending(
    s3: S3AttachmentStore[Any], s3_proxy: FaultProxy, s3_client: Any, bucket: str, fault: str
) -> None:
    params = AttachmentCreateParams(name="r.pdf", size=MIB, mime_type="application/pdf")
    created = await s3.create_attachment(params, CONTEXT)
    await s3.store.save_attachment(created, CONTEXT)  # as ChatKitServer does
    descriptor = created.upload_descriptor
    assert descriptor is not None
    action, after = TWO_PHASE_FAULTS[fault]
    rule = s3_proxy.on_request(PRESIGNED_PUT, action, after=after, reply=HTTP_500)
    async with httpx.AsyncClient() as http:
        try:
            response = await http.put(
                str(descriptor.url), content=b"p" * MIB, headers=descriptor.headers
            )
        except httpx.TransportError:
            status = None
        else:
            status = response.status_code
    assert rule.hits == 1 and status in (None, 500), status
    await s3_proxy.resume()
    assert bucket_keys(s3_client, bucket) == []
    stored = await s3.store.load_attachment(created.id, CONTEXT)
    assert stored.upload_descriptor is not None, "a failed PUT leaves the attachment pending"
    with pytest.raises(NotFoundError):
        await s3.read(created.id, CONTEXT)


@pytest.mark.asyncio
async def test_checking_an_upload_while_s3_is_down_never_marks_it_uploaded(
    s3: S3AttachmentStore[Any], s3_proxy: FaultProxy
) -> None:
    params = AttachmentCreateParams(name="r.pdf", size=10, mime_type="application/pdf")
    created = await s3.create_attachment(params, CONTEXT)
    await s3.store.save_attachment(created, CONTEXT)
    s3_proxy.refuse(Refusal.CLOSED)
    try:
        stored = await s3.store.load_attachment(created.id, CONTEXT)
    except Exception as error:  # the HEAD that checks the upload failed: said clearly
        assert_clear(error)
    else:
        assert stored.upload_descriptor is not None
    await s3_proxy.resume()
    stored = await s3.store.load_attachment(created.id, CONTEXT)
    assert stored.upload_descriptor is not None, "no bytes arrived: still pending"


@pytest.mark.asyncio
async def test_when_the_abort_fails_too_the_upload_error_is_raised_and_logged(
    s3: S3AttachmentStore[Any],
    s3_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3_proxy.on_request(PART_2, Action.REPLY, reply=HTTP_500)
    s3_proxy.on_request(ABORT, Action.REPLY, reply=HTTP_500)
    with pytest.raises(ClientError) as raised:
        await s3.upload(b"x" * 12 * MIB, name="a.pdf", mime_type="application/pdf", context=CONTEXT)
    assert raised.value.operation_name == "UploadPart", "the caller sees the upload's error"
    await s3_proxy.resume()
    assert "could not clean up a failed upload" in caplog.text
    # What only the bucket's lifecycle rule (documented) can collect: an upload left open.
    assert len(open_uploads(s3_client, bucket)) == 1
    assert bucket_keys(s3_client, bucket) == [] and await saved_attachments(s3) == []
