"""pytest plugin (entry point ``pytest11``): database and S3 fixtures for testing stores.

``postgres_url`` and ``mysql_url`` give the URL of a real server: from
``CHATKIT_STORES_POSTGRES_URL`` / ``CHATKIT_STORES_MYSQL_URL`` when set, else from a container
that testcontainers starts when a Docker engine answers, else the test skips. With
``CHATKIT_STORES_REQUIRE_BACKENDS=1`` a backend that cannot be reached fails the test instead,
so a CI run can never pass by not testing a backend.

``s3_endpoint`` gives the endpoint URL of an S3 server: ``CHATKIT_STORES_S3_ENDPOINT`` when set
(credentials from the usual AWS variables), else a moto server in this process, else a MinIO
container, else the test skips. ``s3_credentials()`` gives the boto3 client arguments for it.

This module is loaded by every pytest run where chatkit-stores is installed: it imports
nothing heavy until a fixture is used.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

REQUIRE_ENV = "CHATKIT_STORES_REQUIRE_BACKENDS"
POSTGRES_ENV = "CHATKIT_STORES_POSTGRES_URL"
MYSQL_ENV = "CHATKIT_STORES_MYSQL_URL"
POSTGRES_IMAGE = "postgres:16-alpine"
MARIADB_IMAGE = "mariadb:11"
S3_ENV = "CHATKIT_STORES_S3_ENDPOINT"
MINIO_IMAGE = "minio/minio:RELEASE.2022-12-02T19-19-22Z"
S3_TEST_CREDENTIALS = {
    "aws_access_key_id": "chatkit-test",
    "aws_secret_access_key": "chatkit-test-secret",
    "region_name": "us-east-1",
}
"""What the moto server and the MinIO container that ``s3_endpoint`` starts accept."""


def unavailable(backend: str, why: str) -> None:
    """Skip the test (or fail it when backends are required) because ``backend`` is missing."""
    message = f"{backend} tests cannot run: {why}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


def docker_running() -> bool:
    """Whether a Docker engine answers (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def server_url(backend: str) -> Iterator[str]:
    """Yield a URL for ``postgres`` or ``mysql``: environment, else testcontainers, else skip."""
    name, env = {"postgres": ("PostgreSQL", POSTGRES_ENV), "mysql": ("MariaDB", MYSQL_ENV)}[backend]
    url = os.environ.get(env)
    if url:
        yield url
        return
    if not docker_running():
        unavailable(name, f"set {env}, or run a Docker engine for testcontainers")
    try:
        from testcontainers.mysql import MySqlContainer
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        unavailable(name, "pip install 'testcontainers[postgres,mysql]' to start one in Docker")
    if backend == "postgres":
        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        with MySqlContainer(MARIADB_IMAGE, dialect=None) as container:
            yield container.get_connection_url()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database (environment, testcontainers, or skip)."""
    yield from server_url("postgres")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a MySQL/MariaDB database (environment, testcontainers, or skip)."""
    yield from server_url("mysql")


def s3_credentials() -> dict[str, str]:
    """``boto3.client`` arguments (keys, region) for the server ``s3_endpoint`` gives."""
    if os.environ.get(S3_ENV):
        return {"region_name": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    return dict(S3_TEST_CREDENTIALS)


def s3_server() -> Iterator[str]:
    """Yield an S3 endpoint URL: environment, else moto, else MinIO in Docker, else skip."""
    url = os.environ.get(S3_ENV)
    if url:
        yield url
        return
    if importlib.util.find_spec("moto") is not None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            pass
        else:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            # moto accepts any presigned SigV4 URL; S3 checks them, so the tests must see that.
            wsgi = server._server
            assert wsgi is not None, "ThreadedMotoServer.start() makes its WSGI server"
            wsgi.app = PresignedUrlCheck(wsgi.app, [S3_TEST_CREDENTIALS])
            host, port = server.get_host_and_port()
            try:
                yield f"http://{host}:{port}"
            finally:
                server.stop()
            return
    if not docker_running():
        unavailable("S3", f"set {S3_ENV}, pip install 'moto[server]', or run a Docker engine")
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import HttpWaitStrategy
    except ImportError:
        unavailable("S3", "pip install testcontainers (or 'moto[server]') to start a server")
    container = (
        DockerContainer(MINIO_IMAGE)
        .with_exposed_ports(9000)
        .with_env("MINIO_ROOT_USER", S3_TEST_CREDENTIALS["aws_access_key_id"])
        .with_env("MINIO_ROOT_PASSWORD", S3_TEST_CREDENTIALS["aws_secret_access_key"])
        .with_command("server /data --address :9000")
        .waiting_for(HttpWaitStrategy(9000, "/minio/health/live"))
    )
    with container:
        yield f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9000)}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of an S3 server (environment, moto, MinIO in Docker, or skip)."""
    yield from s3_server()


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
