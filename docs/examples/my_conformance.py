"""A store factory for ``chatkit-stores conformance my_conformance:make_store``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from chatkit_stores import SQLStore

# --8<-- [start:factory]
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/chat.db"


@asynccontextmanager
async def make_store() -> AsyncIterator[SQLStore[Any]]:
    async with SQLStore.from_url(DATABASE_URL) as store:  # your store here
        await store.create_schema()
        yield store


# --8<-- [end:factory]
