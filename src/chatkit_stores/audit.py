"""Audit records for sensitive operations: deletes, downloads and uploads. Ids, never content.

Every event is logged on the ``chatkit_stores.audit`` logger (INFO; ERROR when a hook fails) and
handed to the store's optional ``audit`` hook, a callable taking an :class:`AuditEvent` that may
be sync or async. An event names the action, its outcome, the tenant and the ids involved; never
item text, file bytes or file names (names are user content).

When a hook runs and what its failure does:

- The hook runs after the operation took effect (deletes committed, bytes removed), or, for a
  download, once the bytes were found and before the first byte is handed out.
- If the hook raises, the failure is logged with the event and :class:`AuditError` is raised to
  the caller; the store's state is complete and consistent (a retried delete is a no-op), and a
  download that raised handed out nothing. An error of the operation itself is never replaced:
  it propagates, the hook failure is logged.
- Events of operations nested in another (bytes deleted by ``delete_thread``) carry the outer
  action in ``via``; their hook failures are raised once the outer operation has finished and
  emitted its own event.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

from chatkit.store import NotFoundError

from .exceptions import DENIED as DENIED  # the outcomes, beside the errors that stand for them
from .exceptions import ERROR as ERROR
from .exceptions import NOT_FOUND as NOT_FOUND
from .exceptions import OK as OK
from .exceptions import REJECTED as REJECTED

log = logging.getLogger("chatkit_stores.audit")

THREAD_DELETE: Final = "thread.delete"
"""``Store.delete_thread``: a thread, its items and its attachments' metadata."""
ATTACHMENT_DELETE: Final = "attachment.delete"
"""``Store.delete_attachment``: one attachment's metadata."""
BYTES_DELETE: Final = "attachment.bytes.delete"
"""An attachment store deleted an attachment's stored bytes."""
BYTES_READ: Final = "attachment.bytes.read"
"""An attachment's bytes were read: ``open``/``read``, or a signed download URL."""
BYTES_UPLOAD: Final = "attachment.bytes.upload"
"""An upload finished (or was refused): direct ``upload``, signed URL, presigned S3 PUT."""

MAX_ID_LENGTH = 255
"""Ids from a request path are clipped to this length before they are recorded."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One sensitive operation: what, on whose data, which ids, how it ended. Never content.

    ``outcome`` is ``ok``, ``not_found``, ``denied`` (no tenant, bad signature), ``rejected``
    (a limit refused an upload) or ``error`` (``error`` then names the exception type).
    Deleting a missing object (or another tenant's) is a no-op and reported ``ok``.
    ``via`` is ``call`` (a direct call), the action of the operation that caused this one
    (``thread.delete``, ``orphans``), ``signed_url`` (the disk app) or ``presigned_url`` (S3).
    """

    action: str
    outcome: str
    tenant: str | None
    store: str
    via: str = "call"
    thread_id: str | None = None
    attachment_id: str | None = None
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


AuditHook = Callable[[AuditEvent], "Awaitable[None] | None"]
"""The ``audit=`` hook of stores and attachment stores."""


class AuditError(RuntimeError):
    """The audit hook failed; the audited operation had already taken effect."""

    def __init__(self, event: AuditEvent) -> None:
        super().__init__(
            f"the audit hook failed for {event.action} ({event.outcome}); "
            "the operation itself completed"
        )
        self.event = event


@dataclass
class _Scope:
    via: str
    failures: list[AuditError] = field(default_factory=list)


_scope: ContextVar[_Scope | None] = ContextVar("chatkit_stores_audit_scope", default=None)


def outcome_of(error: BaseException) -> str:
    """The outcome an exception of an audited operation stands for (see ``exceptions``)."""
    if isinstance(error, NotFoundError):
        return NOT_FOUND
    outcome: str = getattr(error, "audit_outcome", ERROR)
    return outcome


def error_name(error: BaseException | None) -> str | None:
    """The exception's class name (never its message: messages can quote content)."""
    return None if error is None else type(error).__name__


def current_via() -> str:
    """``call``, or the action of the audited operation this one runs inside."""
    scope = _scope.get()
    return "call" if scope is None else scope.via


def clip(value: str | None) -> str | None:
    """An id as recorded: at most ``MAX_ID_LENGTH`` characters."""
    return None if value is None else value[:MAX_ID_LENGTH]


async def emit(hook: AuditHook | None, event: AuditEvent, *, failing: bool = False) -> None:
    """Log ``event`` and call ``hook``; see the module docstring for what a hook failure does.

    ``failing``: the operation itself raised, so a hook failure is only logged.
    """
    extra = {"audit_event": event}
    if log.isEnabledFor(logging.INFO):
        error = f" error={event.error}" if event.error else ""
        log.info("%s via=%s store=%s%s", _what(event), event.via, event.store, error, extra=extra)
    if hook is None:
        return
    try:
        result = hook(event)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log.error("audit hook failed for %s", _what(event), exc_info=True, extra=extra)
        if failing:
            return
        failure = AuditError(event)
        failure.__cause__ = exc
        scope = _scope.get()
        if scope is not None:
            scope.failures.append(failure)
            return
        raise failure from exc


def _what(event: AuditEvent) -> str:
    """``action outcome tenant=... thread=... attachment=...``, for the log."""
    return (
        f"{event.action} {event.outcome} tenant={event.tenant!r} thread={event.thread_id!r} "
        f"attachment={event.attachment_id!r}"
    )


@contextmanager
def audit_scope(via: str) -> Iterator[None]:
    """Tag events emitted inside with ``via``; hold their hook failures until the block ends.

    On a normal exit the first held failure is raised as ``AuditError`` (or handed to the
    enclosing scope); an exception of the block wins and the failures stay logged only.
    """
    scope = _Scope(via)
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
    _settle(scope)


def _settle(scope: _Scope) -> None:
    if not scope.failures:
        return
    outer = _scope.get()
    if outer is not None:
        outer.failures.extend(scope.failures)
        return
    raise scope.failures[0]


R = TypeVar("R")


async def audit_call(
    store: Any,
    action: str,
    tenant: str | None,
    id_name: str | None,
    object_id: object,
    work: Awaitable[R],
) -> R:
    """Await ``work``, a method of ``store`` on ``object_id``, and emit ``action`` for it.

    The event is emitted after the method returned (or raised), with the tenant, the id and the
    outcome; events of operations the method causes are tagged ``via=action``. A method that
    returns ``False`` (a conditional delete whose condition no longer held) emits nothing.
    """
    recorded = clip(object_id if isinstance(object_id, str) else None)
    event = functools.partial(
        AuditEvent, action, tenant=tenant, store=type(store).__name__,
        thread_id=recorded if id_name == "thread_id" else None,
        attachment_id=recorded if id_name != "thread_id" else None,
    )  # fmt: skip
    scope = _Scope(action)
    token = _scope.set(scope)
    try:
        result = await work
    except BaseException as exc:
        _scope.reset(token)
        failed = event(outcome_of(exc), via=current_via(), error=error_name(exc))
        await emit(store.audit, failed, failing=True)
        raise
    _scope.reset(token)
    if result is not False:  # a conditional delete that deleted nothing did nothing
        await emit(store.audit, event(OK, via=current_via()))
    _settle(scope)
    return result


async def audited_stream(
    hook: AuditHook | None,
    chunks: AsyncIterator[bytes],
    *,
    tenant: str,
    store: str,
    attachment_id: str,
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through; emit ``attachment.bytes.read`` once the first chunk is read."""
    event = functools.partial(
        AuditEvent, BYTES_READ, tenant=tenant, store=store, via=current_via(),
        attachment_id=clip(attachment_id),
    )  # fmt: skip
    try:
        first = await anext(chunks, None)
    except BaseException as exc:
        await emit(hook, event(outcome_of(exc), error=error_name(exc)), failing=True)
        raise
    await emit(hook, event(OK))
    if first is None:
        return
    yield first
    async for chunk in chunks:
        yield chunk


__all__ = [
    "ATTACHMENT_DELETE",
    "BYTES_DELETE",
    "BYTES_READ",
    "BYTES_UPLOAD",
    "THREAD_DELETE",
    "AuditError",
    "AuditEvent",
    "AuditHook",
    "audit_scope",
    "emit",
]
