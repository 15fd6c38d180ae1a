"""Who owns a row: turning the app's request context into a tenant key.

Every row a store writes is keyed by tenant first. The tenant comes from the ChatKit request
context through a *resolver*: a callable ``context -> str``. The default reads ``tenant_id``,
else ``user_id``, as a mapping key or an attribute, so dicts, dataclasses and pydantic models
all work. A context without a tenant raises ``TenantError`` before anything is read or
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .exceptions import TenantError as TenantError  # defined with its audit outcome

TenantResolver = Callable[[Any], str]
"""A callable that returns the tenant key for a ChatKit request context."""

TENANT_FIELDS = ("tenant_id", "user_id")
TENANT_SETTING = "chatkit_stores.tenant"
"""The PostgreSQL setting Row-Level Security policies compare each row's tenant with."""

MAX_KEY_LENGTH = 255

_HOW_TO_CONFIGURE = (
    "Give the context a 'tenant_id' or 'user_id' (mapping key or attribute), pass "
    "tenant=lambda ctx: ... to the store, or tenant=single_tenant() if the app has only one tenant."
)


class TenantContext:
    """A context that names its tenant directly (used behind signed upload URLs)."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id

    def __repr__(self) -> str:
        return f"TenantContext({self.tenant_id!r})"


def default_tenant(context: Any) -> str:
    """Return the context's ``tenant_id``, else its ``user_id`` (mapping key or attribute)."""
    for field in TENANT_FIELDS:
        value = _field(context, field)
        if value is not None:
            return check_tenant(value, source=field)
    raise TenantError(
        f"The ChatKit request context ({type(context).__name__}) has no tenant. {_HOW_TO_CONFIGURE}"
    )


def single_tenant(name: str = "default") -> TenantResolver:
    """Return a resolver that puts every context in one tenant (for single-tenant apps)."""
    check_tenant(name, source="single_tenant()")
    return lambda _context: name


def check_tenant(value: Any, *, source: str = "resolver") -> str:
    """Return ``value`` if it is a usable tenant key, else raise ``TenantError``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise TenantError(
            f"The tenant from {source} must be a non-empty string, got {value!r}. "
            + _HOW_TO_CONFIGURE
        )
    if not is_storable_key(value):
        raise TenantError(
            f"The tenant from {source} must be at most {MAX_KEY_LENGTH} characters "
            "of valid unicode without NUL characters."
        )
    return value


def is_storable_key(value: str) -> bool:
    """Whether ``value`` can key a row: 1-255 characters, no NUL, encodable as UTF-8.

    Lone surrogates (``"\\ud800"``, which ``json.loads`` accepts) cannot be encoded, and
    database drivers fail on them with their own errors.
    """
    if not 0 < len(value) <= MAX_KEY_LENGTH or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(context: Any, name: str) -> Any:
    if isinstance(context, Mapping):
        return context.get(name)
    return getattr(context, name, None)
