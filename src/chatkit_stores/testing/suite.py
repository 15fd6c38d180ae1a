"""``StoreTests``: every store conformance test in one class to subclass."""

from __future__ import annotations

from . import store
from .races import RaceTests
from .server import ServerTests
from .stateful import StatefulTests


class StoreTests(
    store.ThreadTests,
    store.ItemTests,
    store.OrderingTests,
    store.AttachmentMetadataTests,
    store.DeleteThreadTests,
    store.TenantIsolationTests,
    store.ConcurrencyTests,
    RaceTests,
    store.DurabilityTests,
    store.IdTests,
    ServerTests,
    StatefulTests,
):
    """Every store conformance test. Subclass it and override the ``store`` fixture."""
