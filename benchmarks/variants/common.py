"""Small helpers every hand-written baseline store needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from chatkit.types import Attachment, Page, ThreadItem
from pydantic import TypeAdapter


class HasId(Protocol):
    """A thread, an item or an attachment."""

    @property
    def id(self) -> str:
        """The object's id."""
        ...


T = TypeVar("T", bound=HasId)
Context = Mapping[str, Any]

ITEM = TypeAdapter[ThreadItem](ThreadItem)
ATTACHMENT = TypeAdapter[Attachment](Attachment)


def tenant_of(context: Context) -> str:
    """The tenant of a request context (the benchmark passes ``{"tenant_id": ...}``)."""
    return str(context["tenant_id"])


def naive_utc(moment: datetime) -> datetime:
    """The naive UTC timestamp stored in ``created_at`` columns."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def check_page(limit: int, order: str) -> None:
    """Reject what ChatKit's ``Store`` contract rejects: an unknown order, a limit below 1."""
    if order not in ("asc", "desc") or limit < 1:
        raise ValueError(f"bad page arguments: order={order!r}, limit={limit!r}")


def page_of(rows: Sequence[T], limit: int) -> Page[T]:
    """A page from up to ``limit + 1`` rows; the extra row means there is more."""
    data = list(rows[:limit])
    has_more = len(rows) > limit
    return Page(data=data, has_more=has_more, after=data[-1].id if has_more else None)
