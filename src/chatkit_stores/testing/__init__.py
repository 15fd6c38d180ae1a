"""Conformance tests for ChatKit stores: subclass ``StoreTests`` and override ``store``.

```python
from chatkit_stores.testing import StoreTests

class TestMyStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self):
        yield MyStore(...)
```
"""

from ..demo import EchoServer
from .server import ServerTests
from .store import (
    AttachmentMetadataTests,
    ConcurrencyTests,
    DeleteThreadTests,
    IdTests,
    ItemTests,
    OrderingTests,
    StoreFixtures,
    TenantIsolationTests,
    ThreadTests,
)
from .suite import StoreTests

__all__ = [
    "AttachmentMetadataTests",
    "ConcurrencyTests",
    "DeleteThreadTests",
    "EchoServer",
    "IdTests",
    "ItemTests",
    "OrderingTests",
    "ServerTests",
    "StoreFixtures",
    "StoreTests",
    "TenantIsolationTests",
    "ThreadTests",
]
