"""A MySQL/MariaDB server that accepts a connection and never greets fails the call in time.

aiomysql's ``connect_timeout`` bounds only the TCP connect; the wait for the server's greeting
has no bound of its own, so such a server (overloaded, half dead, a stalled proxy) held the call,
and its place in line, for ever. No real server is needed: a socket that accepts and says nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import exc

from chatkit_stores import SQLStore

CONTEXT = {"user_id": "alice"}
GUARD_S = 5.0
"""How long the test waits before it calls the store call hung (well above the timeouts used)."""


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """The port of a server that accepts connections and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in held:
        writer.transport.abort()


async def test_a_server_that_never_greets_fails_the_call(silent_server: int) -> None:
    options: dict[str, Any] = {"connect_args": {"connect_timeout": 0.2}}
    store = SQLStore.from_url(f"mysql://root@127.0.0.1:{silent_server}/db", engine_options=options)
    try:
        refused = re.escape("no handshake from the server within 0.2 s")
        with pytest.raises(exc.OperationalError, match=refused):
            await asyncio.wait_for(store.load_thread("thr_1", CONTEXT), GUARD_S)
    finally:
        await store.close()
