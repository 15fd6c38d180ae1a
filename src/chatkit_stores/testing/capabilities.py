"""What a store under test supports: features it may lack, and this package's policies.

Two layers. **ChatKit's contract** (what ``chatkit/store.py`` documents and ``chatkit/server.py``
relies on, plus tenant access isolation) binds every store and cannot be switched off.
**Policies** are rules this package's stores follow beyond the contract; each is a flag an
outside store can turn off, and the stateful reference model follows the same flags, so a
policy difference never hides a contract bug. **Features** are abilities a store may lack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any] | type)

FEATURE = {"layer": "feature"}
POLICY = {"layer": "policy"}


@dataclass(frozen=True)
class Capabilities:
    """Features and policies of the store under test; tests of a disabled flag skip, naming it.

    Override the ``capabilities`` fixture to return ``Capabilities(flag=False, ...)``, or
    ``Capabilities.opt_out(flag="why", ...)`` to give each flag turned off a one-line reason.
    """

    # features a store may lack

    concurrent_writes: bool = field(default=True, metadata=FEATURE)
    """Concurrent calls on one store instance (``asyncio.gather``) lose no write."""

    large_items: bool = field(default=True, metadata=FEATURE)
    """Items and threads of several megabytes of text round-trip."""

    nul_in_text: bool = field(default=True, metadata=FEATURE)
    """Text containing U+0000 round-trips (PostgreSQL ``jsonb`` and ``text`` reject it)."""

    merged_thread_saves: bool = field(default=True, metadata=FEATURE)
    """A thread object saved after someone else saved the thread keeps their changes and adds
    its own (this package's ``thread_conflicts="merge"``), however often it is saved again."""

    delete_wins_over_saves: bool = field(default=True, metadata=FEATURE)
    """A thread deleted after an object of it was loaded stays deleted when that object is
    saved (a response still streaming into a deleted thread does not bring it back)."""

    durability: bool = field(default=True, metadata=FEATURE)
    """Data survives closing the store and opening a new one on the same storage (``reopen``)."""

    # policies of this package's stores, beyond ChatKit's contract

    tenant_id_scopes: bool = field(default=True, metadata=POLICY)
    """Ids are scoped per tenant: the same id in two tenants names two unrelated objects.
    (Off: ids are global; access isolation between tenants is still checked.)"""

    argument_errors: bool = field(default=True, metadata=POLICY)
    """``limit < 1`` or an ``order`` other than ``"asc"``/``"desc"`` raises ``ValueError``
    (ChatKit's server never passes either)."""

    unknown_cursor_not_found: bool = field(default=True, metadata=POLICY)
    """An ``after`` cursor naming nothing raises ``NotFoundError`` (off: any exception will
    do; restarting from the first page is a contract bug either way)."""

    thread_delete_removes_attachments: bool = field(default=True, metadata=POLICY)
    """``delete_thread`` also deletes the metadata of the thread's attachments (ChatKit's
    docstring only says "a thread and its items")."""

    insert_if_absent_adds: bool = field(default=True, metadata=POLICY)
    """``add_thread_item`` of an id already stored leaves the stored item as it is (a retried
    add is a no-op; off: the suite never adds an id twice)."""

    thread_resave_keeps_position: bool = field(default=True, metadata=POLICY)
    """A re-saved thread keeps its place among threads with the same ``created_at``
    (off: the order within such a tie is not checked after a re-save)."""

    id_prefixes: bool = field(default=True, metadata=POLICY)
    """Generated ids keep ChatKit's prefixes (``thr_``, ``msg_``, ``tc_``, ``tsk_``, ``wf_``);
    ChatKit reads no prefix, and invites overriding the generators."""

    id_entropy: bool = field(default=True, metadata=POLICY)
    """Generated thread ids carry at least 96 random bits (ChatKit's default has 32: a
    collision is likely within ~77,000 threads)."""

    naive_is_utc: bool = field(default=True, metadata=POLICY)
    """A naive ``created_at`` orders as UTC next to aware ones (off: the suite never mixes
    naive and aware timestamps in one list, so the machine's time zone cannot matter)."""

    reasons: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    """Why each flag is off, by flag name; shown in the skip messages."""

    def __post_init__(self) -> None:
        unknown = set(self.reasons) - set(self.names())
        if unknown:
            raise ValueError(f"reasons for unknown capabilities {sorted(unknown)}")

    @classmethod
    def opt_out(cls, **reasons: str) -> Capabilities:
        """Capabilities with each named flag off, for the one-line reason given."""
        unknown = set(reasons) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {cls.names()}")
        return cls(**dict.fromkeys(reasons, False), reasons=dict(reasons))

    @classmethod
    def names(cls, layer: str | None = None) -> list[str]:
        """The names of all flags, or of one layer's (``"feature"`` or ``"policy"``)."""
        return [
            f.name
            for f in fields(cls)
            if "layer" in f.metadata and layer in (None, f.metadata["layer"])
        ]

    def disabled(self) -> list[str]:
        """The names of the flags turned off."""
        return [name for name in self.names() if not getattr(self, name)]


def requires(*flags: str) -> Callable[[T], T]:
    """Mark a test, or every test of a class, as needing the named capabilities."""
    unknown = set(flags) - set(Capabilities.names())
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {Capabilities.names()}")

    def tag(test: Callable[..., Any]) -> None:
        test.chatkit_requires = (*getattr(test, "chatkit_requires", ()), *flags)  # type: ignore[attr-defined]

    def mark(target: T) -> T:
        if isinstance(target, type):
            for name, value in vars(target).items():
                if name.startswith("test_") and callable(value):
                    tag(value)
        else:
            tag(target)
        return target

    return mark


def missing(capabilities: Capabilities, needed: tuple[str, ...]) -> str | None:
    """Return a skip reason naming the first disabled flag in ``needed``, or None."""
    for flag in needed:
        if not getattr(capabilities, flag):
            reason = capabilities.reasons.get(flag)
            because = f": {reason}" if reason else ""
            return f"capability {flag!r} is disabled (Capabilities.{flag}=False){because}"
    return None
