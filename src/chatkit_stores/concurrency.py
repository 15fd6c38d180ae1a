"""Optimistic concurrency for threads: a save never silently undoes a change made meanwhile.

ChatKit loads a thread when a request starts and saves it when the response ends. A rename or a
status change made by another request in between would be overwritten by that save. So each
stored thread has a version, bumped by every save that writes, and the store remembers, for
every thread object it returned, the version and the JSON it had. Saving that object again is a
compare-and-swap on the version. When someone else saved in between:

- ``"merge"`` (the default): the fields this object changed since it was loaded are applied to
  the thread as it is now (``metadata`` key by key); the others keep the newer values. When both
  changed the same field, this save wins.
- ``"raise"``: ``ThreadConflictError``; load the thread again and redo the change.
- ``"overwrite"``: the last save wins whole (no version check).

A thread object the store did not return (a new thread, a copy) is saved whole, as before, and
from then on is known like a loaded one (its version is read when it is next changed). An object
saved unchanged since it was loaded or saved writes nothing, so the save ChatKit makes at the end
of every response costs no write, fsync or replication.

A delete wins over a save of an object loaded or saved before it: the thread stays deleted (a
response still streaming into a thread the user deleted does not bring it back). In
``"overwrite"`` mode every save is a plain upsert.

After a merge, the object still holds its stale copy of the fields others changed; the store
remembers both what the caller last saw and what is stored, so the next save of the same object
applies only the caller's new changes again and never reverts the merged ones.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from chatkit.types import ThreadMetadata

ThreadConflicts = Literal["merge", "raise", "overwrite"]
MAX_ATTEMPTS = 100  # each lost attempt means another save won: progress is never stalled
_MISSING = object()


class ThreadConflictError(RuntimeError):
    """The thread was saved by someone else since this object was loaded (``"raise"`` mode)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"Thread {thread_id} changed since it was loaded; load it again and redo the change "
            "(or build the store with thread_conflicts='merge')"
        )
        self.thread_id = thread_id


@dataclass
class _Seen:
    ref: weakref.ref[ThreadMetadata]
    tenant: str  # what it says of the thread holds in this tenant only
    version: int | None  # None: saved whole by this store, its version not read yet
    data: str  # the object's JSON when loaded or last saved: its changes are relative to this
    stored: str  # the JSON stored at ``version`` (differs from ``data`` after a merge)


class LoadedThreads:
    """The version and JSON each thread object had when this store loaded or last saved it."""

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def remember(
        self,
        thread: ThreadMetadata,
        tenant: str,
        version: int | None,
        data: str,
        stored: str | None = None,
    ) -> None:
        """Record ``thread`` of ``tenant`` as ``data``, ``stored`` at ``version``."""
        key = id(thread)
        forget = weakref.ref(thread, lambda _: self._seen.pop(key, None))
        self._seen[key] = _Seen(forget, tenant, version, data, data if stored is None else stored)

    def recall(self, thread: ThreadMetadata, tenant: str) -> _Seen | None:
        """What ``thread`` looked like in ``tenant`` when last loaded or saved there, if known."""
        seen = self._seen.get(id(thread))
        if seen is None or seen.ref() is not thread or seen.tenant != tenant:
            return None
        return seen


def merge(ours: dict[str, Any], base: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``theirs`` plus every field ``ours`` changed since ``base`` (``metadata`` key by key)."""
    merged = dict(theirs)
    for key in ours.keys() | base.keys():
        mine, was = ours.get(key, _MISSING), base.get(key, _MISSING)
        if mine == was:
            continue
        if key == "metadata" and all(isinstance(v, dict) for v in (mine, was, theirs.get(key))):
            merged[key] = merge(mine, was, theirs[key])
        elif mine is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = mine
    return merged


class ThreadRows(Protocol):
    """The three primitives on one stored thread that ``save_thread`` is written with."""

    async def _swap_thread_row(
        self, tenant: str, thread: ThreadMetadata, data: str, version: int
    ) -> bool:
        """Write ``data`` only if the stored version is ``version``, and bump it; whether it was."""
        ...

    async def _stored_thread_row(self, tenant: str, thread_id: str) -> tuple[str, int] | None:
        """The stored ``(data, version)`` of the thread, or None."""
        ...

    async def _upsert_thread_row(self, tenant: str, thread: ThreadMetadata, data: str) -> None:
        """Write ``data`` whatever is stored (an existing thread keeps its place)."""
        ...


async def save_thread(
    seen: LoadedThreads,
    rows: ThreadRows,
    thread: ThreadMetadata,
    tenant: str,
    data: str,
    mode: ThreadConflicts,
) -> None:
    """Save ``data`` (the JSON of ``thread``) under the rules above, with the store's ``rows``."""
    if mode == "overwrite":
        await rows._upsert_thread_row(tenant, thread, data)
        return
    was = seen.recall(thread, tenant)
    if was is None:  # a new thread or a copy: saved whole, then known like a loaded one
        await rows._upsert_thread_row(tenant, thread, data)
        seen.remember(thread, tenant, None, data)
        return
    if data == was.data:
        # Unchanged since loaded (ChatKit saves every thread at the end of a response): there
        # is nothing of ours to apply over a newer save, and an unchanged row is not rewritten.
        return
    if was.version is None:  # its version is read once, when it is first changed again
        now = await rows._stored_thread_row(tenant, thread.id)
        if now is None:  # deleted since it was saved: the delete wins
            return
        stored, version = now
    else:
        stored, version = was.stored, was.version
    to_write = data if stored == was.data else _merged(data, was.data, stored)
    for _ in range(MAX_ATTEMPTS):
        if await rows._swap_thread_row(tenant, thread, to_write, version):
            seen.remember(thread, tenant, version + 1, data, to_write)
            return
        now = await rows._stored_thread_row(tenant, thread.id)
        if now is None:  # deleted since it was loaded: the delete wins
            return
        if mode == "raise":
            raise ThreadConflictError(thread.id)
        theirs, version = now
        to_write = _merged(data, was.data, theirs)
    raise ThreadConflictError(thread.id)  # saved by others MAX_ATTEMPTS times in a row


def _merged(ours: str, base: str, theirs: str) -> str:
    """The JSON of ``theirs`` with the changes ``ours`` made since ``base``."""
    merged = merge(json.loads(ours), json.loads(base), json.loads(theirs))
    return ThreadMetadata.model_validate(merged).model_dump_json()
