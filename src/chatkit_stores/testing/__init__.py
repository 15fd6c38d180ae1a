"""Conformance tests for ChatKit stores: subclass ``StoreTests`` and override ``store``.

```python
import pytest_asyncio
from chatkit_stores.testing import StoreTests

class TestMyStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self):
        yield MyStore()
```

The area classes (``ThreadTests``, ``ItemTests``, ...) can be adopted one at a time;
``Capabilities`` switches off features a store does not have.

Names are imported on first use: pytest, hypothesis and the demo's ChatKit server take
seconds to import, and ``chatkit_stores.testing.models`` alone needs none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ..demo import EchoServer
    from .capabilities import Capabilities, requires
    from .fixtures import StoreFixtures, add_items, collect
    from .races import RaceTests, await_points_of
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
    from .suite import StoreTests

_EXPORTS = {
    "AttachmentMetadataTests": ".store",
    "Capabilities": ".capabilities",
    "ConcurrencyTests": ".store",
    "DeleteThreadTests": ".store",
    "DurabilityTests": ".store",
    "EchoServer": "..demo",
    "IdTests": ".store",
    "ItemTests": ".store",
    "OrderingTests": ".store",
    "RaceTests": ".races",
    "ServerTests": ".server",
    "StatefulTests": ".stateful",
    "StoreFixtures": ".fixtures",
    "StoreTests": ".suite",
    "TenantIsolationTests": ".store",
    "ThreadTests": ".store",
    "add_items": ".fixtures",
    "await_points_of": ".races",
    "collect": ".fixtures",
    "requires": ".capabilities",
}

__all__ = [
    "AttachmentMetadataTests",
    "Capabilities",
    "ConcurrencyTests",
    "DeleteThreadTests",
    "DurabilityTests",
    "EchoServer",
    "IdTests",
    "ItemTests",
    "OrderingTests",
    "RaceTests",
    "ServerTests",
    "StatefulTests",
    "StoreFixtures",
    "StoreTests",
    "TenantIsolationTests",
    "ThreadTests",
    "add_items",
    "await_points_of",
    "collect",
    "requires",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
