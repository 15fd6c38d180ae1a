"""Conformance tests for ChatKit stores: subclass ``StoreTests`` and override ``store``.

```python
from chatkit_stores.testing import StoreTests

class TestMyStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self):
        yield MyStore(...)
```
"""

from .store import (
    AttachmentMetadataTests,
    ConcurrencyTests,
    DeleteThreadTests,
    IdTests,
    ItemTests,
    OrderingTests,
    StoreFixtures,
    StoreTests,
    TenantIsolationTests,
    ThreadTests,
)

__all__ = [
    "AttachmentMetadataTests",
    "ConcurrencyTests",
    "DeleteThreadTests",
    "IdTests",
    "ItemTests",
    "OrderingTests",
    "StoreFixtures",
    "StoreTests",
    "TenantIsolationTests",
    "ThreadTests",
]
