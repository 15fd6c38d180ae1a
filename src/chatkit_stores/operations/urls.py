"""Database URLs typed by people, checked before anything connects.

``check_url`` turns every mistake into one :class:`UsageError` line that shows the URL with its
password hidden and says what to write instead: a bare path (``chat.db``), a server address
without a scheme (``127.0.0.1/db``), a port that is not a number or is out of range, an unknown
scheme (``postgress://``), a driver that is not installed. The checks that need only the text
run before SQLAlchemy is imported, so those mistakes are answered at once.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import UsageError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
}
"""The schemes we accept, and what each is called in a suggestion."""

EXAMPLES = "sqlite:///PATH, postgresql://USER@HOST/DB or mysql://USER@HOST/DB"

_PASSWORD = re.compile(r"(?<=://)([^:/@]*):[^@]*@")
_PORT = re.compile(
    r"^[^:/]*://(?:[^:/@]*(?::[^@]*)?@)?(?:\[[^/?\]]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?"
)
_SERVER_ADDRESS = re.compile(r"^(localhost|\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\])(:[^/]*)?/")


def hide_password(text: str) -> str:
    """``text`` with the password of a URL in it replaced by ``***``."""
    return _PASSWORD.sub(r"\1:***@", text)


def hide_passwords(message: str, urls: Iterable[str]) -> str:
    """``message`` with the passwords of URLs in it, and of ``urls`` anywhere in it, hidden."""
    for url in urls:
        match = _PASSWORD.search(url)
        password = match[0][len(match[1]) + 1 : -1] if match else ""
        if len(password) > 2:
            message = message.replace(password, "***")
    return hide_password(message)


def check_url(text: str, *, source: str | None = None) -> URL:
    """Parse a database URL (async driver filled in), or raise :class:`UsageError`.

    ``source`` names where the text came from (``DATABASE_URL``) for the message.
    """
    shown = f"{source}={hide_password(text)!r}" if source else repr(hide_password(text))
    if "://" not in text:
        raise UsageError(f"{shown} is not a database URL: {_instead(text)}")
    scheme = text.split("://", 1)[0]
    if scheme.split("+", 1)[0].lower() not in SCHEMES:
        raise UsageError(
            f"{shown}: unsupported database URL scheme {scheme!r}{_did_you_mean(scheme)}"
        )
    _check_port(text, shown)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ..sql import dialects

    try:
        url = dialects.async_url(make_url(text))
    except (ArgumentError, ValueError) as error:
        raise UsageError(f"{shown} is not a database URL ({error}); write {EXAMPLES}") from None
    _check_driver(url, shown)
    return url


def _instead(text: str) -> str:
    """What to write for a value that has no scheme."""
    if _SERVER_ADDRESS.match(text):
        return f"write postgresql://USER@{text} or mysql://USER@{text}"
    if not text.strip() or any(character.isspace() for character in text):
        return f"write {EXAMPLES}"
    return f"for the SQLite file {text} write sqlite:///{text}"


def _did_you_mean(scheme: str) -> str:
    close = difflib.get_close_matches(scheme.split("+", 1)[0].lower(), list(SCHEMES), n=1)
    hint = f" (did you mean {SCHEMES[close[0]]}://?)" if close else ""
    return f"{hint}; use sqlite://, postgresql:// or mysql:// (mariadb://)"


def _check_port(text: str, shown: str) -> None:
    match = _PORT.match(text)
    port = match["port"] if match else None
    if port is None:
        return
    if not port.isdigit():
        raise UsageError(f"{shown}: the port {port!r} is not a number")
    if not 0 < int(port) < 65536:
        raise UsageError(f"{shown}: the port {port} is out of range (1-65535)")


def _check_driver(url: URL, shown: str) -> None:
    """The driver must be an async one SQLAlchemy knows, and installed (else: which extra)."""
    from sqlalchemy.exc import NoSuchModuleError

    from ..sql import dialects

    driver = url.get_driver_name()
    backend = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB"}.get(
        dialects.backend_of(url), "SQLite"
    )
    plain = f"{url.get_backend_name()}://"
    try:
        dialect = url.get_dialect().get_async_dialect_cls(url)
    except NoSuchModuleError:
        raise UsageError(
            f"{shown}: no driver {driver!r} for {backend}; write {plain} to use the default"
        ) from None
    if not getattr(dialect, "is_async", False):
        raise UsageError(
            f"{shown}: the {driver} driver is not async; write {plain} to use the default"
        )
    extra = dialects.INSTALL_HINTS.get(driver)
    if extra is not None and importlib.util.find_spec(driver) is None:
        raise UsageError(
            f"the {driver} driver for {backend} is not installed: pip install '{extra}'"
        )
