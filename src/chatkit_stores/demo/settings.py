"""The demo's configuration, read from the environment so backends switch with no code change.

``DemoSettings.from_env`` checks what it reads: a value that cannot work (a URL that is not one,
a driver or extra that is not installed, a secret too short) raises :class:`SettingsError`,
which the command prints as one line (exit status 2).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..files.signing import MIN_SECRET_BYTES, OLD_SECRETS_ENV, SECRET_ENV
from ..operations import UsageError

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
  {OLD_SECRETS_ENV}
                      earlier secrets, comma-separated: URLs they signed keep working
                      (rotation: the new secret in {SECRET_ENV}, the old one here)
  OPENAI_API_KEY      answer with the Agents SDK (OPENAI_MODEL picks the model);
                      without it the demo answers offline with an echo
  PUBLIC_URL          the server's address as browsers see it (default http://HOST:PORT)
  {HOST_ENV}, {PORT_ENV}
                      defaults for --host and --port
"""


class SettingsError(UsageError):
    """A setting of the demo cannot work; the message names it and says what to do."""


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
    old_secrets: tuple[str, ...] = ()
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
        """Read the settings from ``environ`` (default ``os.environ``); arguments win over it.

        Raises :class:`SettingsError` for a setting that cannot work.
        """
        env = os.environ if environ is None else environ
        secret = _secret(env.get(SECRET_ENV) or "")
        old_secrets = _old_secrets(env.get(OLD_SECRETS_ENV) or "")
        if old_secrets and not secret:
            raise SettingsError(f"{OLD_SECRETS_ENV} needs {SECRET_ENV}: the secret that signs now")
        s3_bucket = env.get("S3_BUCKET") or None
        if s3_bucket and importlib.util.find_spec("boto3") is None:
            raise SettingsError("S3_BUCKET needs boto3: pip install 'chatkit-stores[s3]'")
        return cls(
            database_url=_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            upload_dir=Path(env.get("UPLOAD_DIR") or DEFAULT_UPLOAD_DIR),
            s3_bucket=s3_bucket,
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            s3_prefix=env.get("S3_PREFIX") or "chatkit-demo/",
            host=host or env.get(HOST_ENV) or DEFAULT_HOST,
            port=port if port is not None else _port(env.get(PORT_ENV)),
            public_url=(env.get("PUBLIC_URL") or "").rstrip("/") or None,
            secret=secret or secrets.token_urlsafe(32),
            secret_generated=not secret,
            old_secrets=old_secrets,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_model=env.get("OPENAI_MODEL") or None,
        )

    @property
    def signing_secrets(self) -> list[str]:
        """The secret that signs URLs, then the earlier ones still accepted."""
        return [self.secret, *self.old_secrets]

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


def _secret(text: str) -> str:
    if text and len(text.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{SECRET_ENV} is {len(text.encode())} bytes; it must be at least {MIN_SECRET_BYTES} "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return text


def _old_secrets(text: str) -> tuple[str, ...]:
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    for number, secret in enumerate(found, start=1):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"{OLD_SECRETS_ENV}: secret {number} is {len(secret.encode())} bytes; "
                f"each must be at least {MIN_SECRET_BYTES}"
            )
    return found


def _database_url(text: str) -> str:
    from ..operations.urls import check_url

    check_url(text, source="DATABASE_URL")
    return text
