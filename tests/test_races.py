"""Races of this package's own operations (prune), paused at each statement of the first side.

The races every ``Store`` must win are in the conformance suite (``testing/races.py``, run by
test_stores.py); uploads and sweeps are in test_upload_races.py and the S3 tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import ThreadMetadata

from chatkit_stores import SQLStore
from chatkit_stores.operations.prune import prune
from chatkit_stores.sql.driver import DRIVERS
from chatkit_stores.testing import await_points_of, models
from chatkit_stores.testing.interleave import interleavings
from conftest import TEST_PREFIX

STATEMENTS = ("begin", "execute", "fetch", "commit")
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLStore[Any]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'chat.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    async with SQLStore.from_url(url, table_prefix=TEST_PREFIX) as store:
        await store.create_schema()
        yield store


async def test_prune_keeps_a_thread_that_gets_a_message_meanwhile(
    sql_store: SQLStore[Any],
) -> None:
    """prune deletes a thread only if it is still inactive when the delete runs."""
    store = sql_store
    tenant = f"t_{uuid.uuid4().hex}"
    context = {"tenant_id": tenant}

    async def stale_thread() -> ThreadMetadata:
        thread = models.thread(created_at=LONG_AGO)
        await store.save_thread(thread, context)
        await store.add_thread_item(thread.id, models.user_message(thread.id, LONG_AGO), context)
        return thread

    async def prune_stale(thread: ThreadMetadata) -> int:
        report = await prune(store, timedelta(days=30), tenant=tenant)
        return report.threads

    async def send(thread: ThreadMetadata) -> None:
        now = datetime.now(timezone.utc)
        await store.add_thread_item(thread.id, models.user_message(thread.id, now), context)

    points = await_points_of(*[(driver, STATEMENTS) for driver in set(DRIVERS.values())])
    with points():
        async for thread, run in interleavings(stale_thread, prune_stale, send):
            pruned, _ = run.results()
            # Await points 0 and 1 are BEGIN and the deleting statement: a message sent before
            # that statement ran (not blocked by prune's transaction) keeps the thread.
            if run.at <= 1 and not run.blocked:
                assert pruned == 0, f"paused at {run.point} ({run.at}): an active thread pruned"
            if pruned == 0:
                page = await store.load_thread_items(thread.id, None, 10, "asc", context)
                assert len(page.data) == 2, "a kept thread keeps every item"
                await store.load_thread(thread.id, context)
            else:
                with pytest.raises(NotFoundError):
                    await store.load_thread(thread.id, context)
            await store.delete_thread(thread.id, context)
