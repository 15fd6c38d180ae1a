"""Callers outnumbering connections are served in turn: a busy loop cannot starve the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatkit_stores import SQLStore
from chatkit_stores.testing import models
from conftest import TEST_PREFIX

SMALL_POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2}
TASKS = 48
CALLS = 20


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_tasks_calling_back_to_back_are_served_in_turn(url: str) -> None:
    """48 tasks on 2 connections, none yielding between calls: all advance together."""
    options = {"table_prefix": TEST_PREFIX, "engine_options": SMALL_POOL}
    async with SQLStore.from_url(url, **options) as store:
        context = {"user_id": models.new_id("user")}
        thread = models.thread()
        await store.save_thread(thread, context)
        calls = [0] * TASKS
        when_first_finished: list[int] = []

        async def busy(task: int) -> None:
            for _ in range(CALLS):
                await store.load_thread(thread.id, context)
                calls[task] += 1
            if not when_first_finished:
                when_first_finished.extend(calls)

        results = await asyncio.gather(*(busy(t) for t in range(TASKS)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} of {TASKS} tasks failed, e.g. {errors[0]!r}"
        # In turn, every task has made all but a call or two when the first one is done.
        assert min(when_first_finished) >= CALLS - 2, when_first_finished
