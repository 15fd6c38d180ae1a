"""A moto S3 server that checks presigned SigV4 URLs as S3 does (moto accepts any).

Test infrastructure of this project only: it replaces the WSGI app of moto's threaded server,
a private attribute, which is why it is not shipped in the package.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit


@contextmanager
def checked_moto_server(credentials: dict[str, str]) -> Iterator[str]:
    """Run a moto S3 server on a free loopback port that refuses bad presigned URLs."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    wsgi = server._server
    assert wsgi is not None, "ThreadedMotoServer.start() makes its WSGI server"
    wsgi.app = PresignedUrlCheck(wsgi.app, [credentials])
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PresignedUrlCheck:
    """WSGI middleware refusing presigned SigV4 URLs with a bad signature or expired, as S3 does.

    The signature covers the signed headers, so an upload whose Content-Type is not the one
    signed is refused (403), as are URLs for another key or method, or tampered with.
    """

    def __init__(self, app: WSGIApp, credentials: Iterable[dict[str, str]]) -> None:
        self.app = app
        self.secrets = {c["aws_access_key_id"]: c["aws_secret_access_key"] for c in credentials}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Answer 403 to a presigned request S3 would refuse; pass the others to the app."""
        if "X-Amz-Signature=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        refusal = self.refusal(environ)
        if refusal is None:
            return self.app(environ, start_response)
        body = f"<Error><Code>{refusal[0]}</Code><Message>{refusal[1]}</Message></Error>".encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def refusal(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """S3's error code and message for a presigned request, or None if it is valid."""
        params = parse_qsl(environ["QUERY_STRING"], keep_blank_values=True)
        values = dict(params)
        try:
            access_key, day, region, service, terminator = values["X-Amz-Credential"].split("/")
            signed_at = datetime.strptime(values["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
            expires = int(values["X-Amz-Expires"])
            signed_headers = values["X-Amz-SignedHeaders"]
        except (KeyError, ValueError):
            return "AuthorizationQueryParametersError", "Malformed presigned URL"
        secret = self.secrets.get(access_key)
        if secret is None:
            return "InvalidAccessKeyId", "The AWS Access Key Id does not exist in our records."
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if now > signed_at + timedelta(seconds=expires):
            return "AccessDenied", "Request has expired"
        path = urlsplit(environ.get("RAW_URI") or quote(environ.get("PATH_INFO", "/"))).path
        query = "&".join(
            f"{k}={v}"
            for k, v in sorted(
                (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                for k, v in params
                if k != "X-Amz-Signature"
            )
        )
        headers = "".join(
            f"{name}:{' '.join(_header(environ, name).split())}\n"
            for name in signed_headers.split(";")
        )
        payload = values.get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
        request = "\n".join(
            [environ["REQUEST_METHOD"], path, query, headers, signed_headers, payload]
        )
        scope = f"{day}/{region}/{service}/{terminator}"
        digest = hashlib.sha256(request.encode()).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{values['X-Amz-Date']}\n{scope}\n{digest}"
        key = f"AWS4{secret}".encode()
        for part in (day, region, service, terminator):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, values.get("X-Amz-Signature", "")):
            return "SignatureDoesNotMatch", "The request signature does not match."
        return None


def _header(environ: dict[str, Any], name: str) -> str:
    name = name.upper().replace("-", "_")
    if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = f"HTTP_{name}"
    return str(environ.get(name, ""))
