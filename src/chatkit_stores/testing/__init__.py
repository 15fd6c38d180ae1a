"""Conformance tests for ChatKit stores: subclass ``StoreTests`` and override ``store``.

```python
import pytest_asyncio
from chatkit_stores.testing import StoreTests

class TestMyStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self):
        yield MyStore()
```

No pytest plugin is needed. The area classes (``ThreadTests``, ``ItemTests``, ...) can be
adopted one at a time; ``Capabilities`` turns off this package's policies and the features a
store lacks. ``AttachmentStoreTests`` does the same for attachment stores.
"""

from __future__ import annotations

from .attachments import AttachmentStoreTests
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

__all__ = [
    "AttachmentMetadataTests",
    "AttachmentStoreTests",
    "Capabilities",
    "ConcurrencyTests",
    "DeleteThreadTests",
    "DurabilityTests",
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
