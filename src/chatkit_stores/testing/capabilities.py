"""What a store under test supports, as named features rather than backend names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any] | type)


@dataclass(frozen=True)
class Capabilities:
    """Features of the store under test. Tests of a disabled feature skip, naming the flag.

    Override the ``capabilities`` fixture to return ``Capabilities(flag=False, ...)``.
    """

    tenant_isolation: bool = True
    """Different tenants see disjoint data; the same ids in two tenants are unrelated."""

    concurrent_writes: bool = True
    """Concurrent calls on one store instance (``asyncio.gather``) lose no write."""

    large_items: bool = True
    """Items and threads of several megabytes of text round-trip."""

    nul_in_text: bool = True
    """Text containing U+0000 round-trips (PostgreSQL ``jsonb`` and ``text`` reject it)."""

    merged_thread_saves: bool = True
    """A thread object saved after someone else saved the thread keeps their changes and adds
    its own (this package's ``thread_conflicts="merge"``), however often it is saved again."""

    delete_wins_over_saves: bool = True
    """A thread deleted after an object of it was loaded stays deleted when that object is
    saved (a response still streaming into a deleted thread does not bring it back)."""

    durability: bool = True
    """Data survives closing the store and opening a new one on the same storage (``reopen``)."""

    @classmethod
    def names(cls) -> list[str]:
        """The names of all flags."""
        return [f.name for f in fields(cls)]


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
            return f"capability {flag!r} is disabled (Capabilities.{flag}=False)"
    return None
