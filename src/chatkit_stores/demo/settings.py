"""The demo's configuration, read from the environment so backends switch with no code change."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..files.signing import SECRET_ENV

DEFAULT_DATABASE_URL = "sqlite:///chatkit-demo.db"
DEFAULT_UPLOAD_DIR = "chatkit-demo-uploads"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HOST_ENV = "CHATKIT_STORES_DEMO_HOST"
PORT_ENV = "CHATKIT_STORES_DEMO_PORT"

ENVIRONMENT_HELP = f"""\
environment:
  DATABASE_URL        where threads live (default {DEFAULT_DATABASE_URL}); postgresql://...
                      or mysql://... need the postgres / mysql extra
  UPLOAD_DIR          folder for attachment bytes (default {DEFAULT_UPLOAD_DIR})
  S3_BUCKET           keep attachment bytes in this S3 bucket instead (needs the s3 extra;
                      S3_ENDPOINT_URL, S3_PREFIX, AWS_* credentials as boto3 reads them)
  {SECRET_ENV}
                      URL signing secret (>= 32 bytes; default: a new one per run)
  OPENAI_API_KEY      answer with the Agents SDK (OPENAI_MODEL picks the model);
                      without it the demo answers offline with an echo
  PUBLIC_URL          the server's address as browsers see it (default http://HOST:PORT)
  {HOST_ENV}, {PORT_ENV}
                      defaults for --host and --port
"""


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo server needs to know; ``from_env`` fills it in."""

    database_url: str = DEFAULT_DATABASE_URL
    upload_dir: Path = Path(DEFAULT_UPLOAD_DIR)
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = "chatkit-demo/"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str | None = None
    secret: str = ""
    secret_generated: bool = False
    openai_api_key: str | None = None
    openai_model: str | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> DemoSettings:
        """Read the settings from ``environ`` (default ``os.environ``); arguments win over it."""
        env = os.environ if environ is None else environ
        secret = env.get(SECRET_ENV) or ""
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            upload_dir=Path(env.get("UPLOAD_DIR") or DEFAULT_UPLOAD_DIR),
            s3_bucket=env.get("S3_BUCKET") or None,
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            s3_prefix=env.get("S3_PREFIX") or "chatkit-demo/",
            host=host or env.get(HOST_ENV) or DEFAULT_HOST,
            port=port if port is not None else _port(env.get(PORT_ENV)),
            public_url=(env.get("PUBLIC_URL") or "").rstrip("/") or None,
            secret=secret or secrets.token_urlsafe(32),
            secret_generated=not secret,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_model=env.get("OPENAI_MODEL") or None,
        )

    def on_port(self, port: int) -> DemoSettings:
        """The same settings on the port the server actually bound (``--port 0``)."""
        return replace(self, port=port)

    @property
    def url(self) -> str:
        """Where browsers reach the server."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


def _port(text: str | None) -> int:
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or int(text) > 65535:
        raise SystemExit(f"chatkit-stores demo: error: {PORT_ENV}={text!r} is not a port number")
    return int(text)
