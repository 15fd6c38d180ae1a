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
"""

from ..demo import EchoServer
from .capabilities import Capabilities, requires
from .fixtures import StoreFixtures, add_items, collect
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
    "Capabilities",
    "ConcurrencyTests",
    "DeleteThreadTests",
    "DurabilityTests",
    "EchoServer",
    "IdTests",
    "ItemTests",
    "OrderingTests",
    "ServerTests",
    "StatefulTests",
    "StoreFixtures",
    "StoreTests",
    "TenantIsolationTests",
    "ThreadTests",
    "add_items",
    "collect",
    "requires",
]
