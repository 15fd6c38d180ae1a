"""Encryption at rest: a store that seals every blob, keys from the environment."""

from __future__ import annotations

import os
from datetime import datetime

from chatkit.types import ThreadMetadata

# --8<-- [start:keys]
from chatkit_stores import SQLStore
from chatkit_stores.encryption import KeyRing, new_key

# In production: CHATKIT_STORES_ENCRYPTION_KEYS="k2:<base64 key>,k1:<base64 key>", current
# first, from your secret manager. new_key() makes a random 256-bit key in base64.
os.environ.setdefault("CHATKIT_STORES_ENCRYPTION_KEYS", f"k1:{new_key()}")
keys = KeyRing.from_env()
store = SQLStore.from_url("sqlite:///chat.db", encryption=keys)
# --8<-- [end:keys]


async def sealed_round_trip(url: str, keys: KeyRing) -> tuple[str, str]:
    """Save a thread through an encrypting store; return its title and the stored ``data``."""
    # --8<-- [start:use]
    async with SQLStore.from_url(url, encryption=keys) as store:
        await store.create_schema()
        context = {"user_id": "alice"}
        thread = ThreadMetadata(id="thr_1", title="Quarterly numbers", created_at=datetime.now())
        await store.save_thread(thread, context)  # data: "ckenc:1:k1:<base64>"
        loaded = await store.load_thread("thr_1", context)  # decrypted and checked
        # --8<-- [end:use]
        async with store.engine.connect() as conn:
            from sqlalchemy import select

            table = store.tables.threads
            data = (await conn.execute(select(table.c.data))).scalar_one()
    return loaded.title or "", data


async def deflated_round_trip(url: str) -> tuple[str, str]:
    """Save a long thread title through a deflating ring; return it and the stored ``data``."""
    # --8<-- [start:compress]
    deflating = KeyRing.from_env(compress=True)  # same keys; rows of 1 KiB or more deflated
    async with SQLStore.from_url(url, encryption=deflating) as store:
        await store.create_schema()
        context = {"user_id": "alice"}
        title = "Quarterly numbers, again and again. " * 50
        thread = ThreadMetadata(id="thr_2", title=title, created_at=datetime.now())
        await store.save_thread(thread, context)  # data: "ckenc:2:k1:<base64>", short
        loaded = await store.load_thread("thr_2", context)  # inflated after it is checked
        # --8<-- [end:compress]
        async with store.engine.connect() as conn:
            from sqlalchemy import select

            table = store.tables.threads
            data = (await conn.execute(select(table.c.data))).scalar_one()
    return loaded.title or "", data
