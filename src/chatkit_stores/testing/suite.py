"""``StoreTests``: every store conformance test in one class to subclass."""

from __future__ import annotations

from .races import RaceTests
from .server import ServerTests
from .stateful import StatefulTests
from .store import (
    AttachmentMetadataTests,
    ConcurrencyTests,
    DeleteThreadTests,
    DurabilityTests,
    IdTests,
    ItemTests,
    OrderingTests,
    TenantIsolationTests,
    ThreadTests,
)


class StoreTests(
    ThreadTests,
    ItemTests,
    OrderingTests,
    AttachmentMetadataTests,
    DeleteThreadTests,
    TenantIsolationTests,
    ConcurrencyTests,
    RaceTests,
    DurabilityTests,
    IdTests,
    ServerTests,
    StatefulTests,
):
    """Every store conformance test. Subclass it and override the ``store`` fixture."""
