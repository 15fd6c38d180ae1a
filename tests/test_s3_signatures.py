"""The S3 server of the tests refuses what S3 refuses: presigned URLs tampered with or expired.

On SeaweedFS (CI: ``CHATKIT_STORES_S3_ENDPOINT``) the server checks SigV4 itself; on moto the
test plugin's ``PresignedUrlCheck`` does. Either way an attachment store's tests only mean
something if a bad URL is refused, so this is asserted against whichever server runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.auth
import httpx
import pytest

BODY = b"%PDF-1.4 test"


def presigned_put(client: Any, bucket: str, key: str, expires: int = 300) -> str:
    params = {"Bucket": bucket, "Key": key, "ContentType": "application/pdf"}
    return str(client.generate_presigned_url("put_object", Params=params, ExpiresIn=expires))


def put(url: str, content_type: str = "application/pdf") -> httpx.Response:
    return httpx.put(url, content=BODY, headers={"Content-Type": content_type})


def test_a_valid_presigned_put_is_accepted(s3_client: Any, bucket: str) -> None:
    assert put(presigned_put(s3_client, bucket, "a.pdf")).status_code == 200
    assert s3_client.get_object(Bucket=bucket, Key="a.pdf")["Body"].read() == BODY


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda url: url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), id="sig"),
        pytest.param(lambda url: url.replace("/a.pdf?", "/b.pdf?"), id="other-key"),
        pytest.param(lambda url: url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"), id="ttl"),
    ],
)
def test_a_tampered_presigned_put_is_refused(s3_client: Any, bucket: str, tamper: Any) -> None:
    url = presigned_put(s3_client, bucket, "a.pdf")
    bad = tamper(url)
    assert bad != url
    assert put(bad).status_code == 403
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_a_put_with_another_content_type_is_refused(s3_client: Any, bucket: str) -> None:
    assert put(presigned_put(s3_client, bucket, "a.pdf"), "text/html").status_code == 403


def test_an_expired_presigned_url_is_refused(
    s3_client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_client.put_object(Bucket=bucket, Key="a.pdf", Body=BODY)
    an_hour_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    params = {"Bucket": bucket, "Key": "a.pdf"}
    url = s3_client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    monkeypatch.undo()
    assert "X-Amz-Expires=60" in url
    assert httpx.get(url).status_code == 403
    fresh = s3_client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert httpx.get(fresh).content == BODY
