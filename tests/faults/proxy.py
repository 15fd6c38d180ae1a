"""A TCP proxy for fault injection between a client and a server on loopback.

On command it cuts every live connection (both sides, abruptly), stalls all traffic, refuses
new connections, or acts on requests whose bytes match a pattern: hold the reply (so a caller
can be cancelled while the server has its request), cut the connection mid-request or once the
server answers, or answer with canned bytes (an HTTP 500) without forwarding.

Everything is driven by asyncio events; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from dataclasses import dataclass, field
from typing import Any

CHUNK = 64 * 1024
WINDOW = 1024
"""Bytes kept from previous chunks so a pattern split across two reads still matches."""


class Refusal(enum.Enum):
    """How new connections are refused."""

    RESET = "reset"
    """Accept, then close at once: the client's handshake fails."""
    CLOSED = "closed"
    """Stop listening: the client gets connection refused."""


class Action(enum.Enum):
    """What a rule does to a request that matches it."""

    HOLD = "hold"
    """Forward the request; hold the replies on that connection until ``resume``."""
    CUT_REQUEST = "cut_request"
    """Forward the matching bytes (plus ``after`` more), then cut the connection."""
    CUT_REPLY = "cut_reply"
    """Forward the request; cut the connection as soon as the server starts answering."""
    REPLY = "reply"
    """Forward nothing; answer ``reply`` and swallow the rest of the request."""


@dataclass(eq=False)
class Rule:
    """A request pattern and what to do on a match; ``seen`` is set at the first match."""

    pattern: re.Pattern[bytes]
    action: Action
    once: bool = False
    after: int = 0
    reply: bytes = b""
    hits: int = 0
    seen: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    replies: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cut_after: int | None = None
    cut_on_reply: bool = False
    swallowing: bool = False

    def __post_init__(self) -> None:
        self.replies.set()

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.links_cut = 0
        self.upstream_ports: list[int] = []
        """Local ports of every upstream connection made (the server sees them as the client's)."""
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusal: Refusal | None = None
        self._rules: list[Rule] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen on a free loopback port (on the same port again after ``refuse(CLOSED)``)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, drop every connection, and wait for the proxy's tasks to end."""
        self._stop_listening()
        self._flowing.set()
        self.cut(count=False)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=10)

    @property
    def live(self) -> int:
        """How many client connections are open through the proxy."""
        return len(self._links)

    # faults

    def cut(self, *, count: bool = True) -> int:
        """Close every live connection abruptly, both sides; return how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        if count:
            self.cuts += 1
            self.links_cut += len(links)
        return len(links)

    def stall(self) -> None:
        """Stop forwarding in both directions (bytes wait in the proxy) until ``resume``."""
        self._flowing.clear()

    def refuse(self, how: Refusal = Refusal.RESET) -> None:
        """Refuse new connections until ``resume``; live ones are left alone."""
        self._refusal = how
        if how is Refusal.CLOSED:
            self._stop_listening()

    def on_request(
        self,
        pattern: bytes,
        action: Action,
        *,
        once: bool = False,
        after: int = 0,
        reply: bytes = b"",
    ) -> Rule:
        """Apply ``action`` to requests whose bytes match the regex ``pattern`` until ``resume``."""
        rule = Rule(re.compile(pattern), action, once=once, after=after, reply=reply)
        self._rules.append(rule)
        return rule

    def hold_reply_after(self, pattern: bytes) -> asyncio.Event:
        """Hold the replies after the first request matching ``pattern``; return 'seen'."""
        return self.on_request(pattern, Action.HOLD, once=True).seen

    async def resume(self) -> None:
        """End every fault: forward again, accept again, release held replies, drop rules."""
        self._rules.clear()
        self._refusal = None
        if self._server is None:
            await self.start()
        for link in self._links:
            link.replies.set()
        self._flowing.set()

    # forwarding

    def _stop_listening(self) -> None:
        # No wait_closed(): since Python 3.12 it also waits for the live connections to end.
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self._refusal is not None:
            self.refused += 1
            client.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            return
        self.upstream_ports.append(upstream.get_extra_info("sockname")[1])
        link = _Link(client, upstream)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._requests(reader, link)),
            asyncio.create_task(self._replies(up_reader, link)),
        ]
        await asyncio.wait(link.tasks)
        link.abort()
        self._links.discard(link)

    async def _requests(self, reader: asyncio.StreamReader, link: _Link) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(CHUNK):
                await self._flowing.wait()
                if link.swallowing:
                    continue
                window = tail + chunk
                rule = self._match(window)
                tail = b"" if rule else window[-WINDOW:]
                if rule is not None and rule.action is Action.REPLY:
                    link.swallowing = True
                    link.client.write(rule.reply)
                    rule.seen.set()
                    continue
                if rule is not None and rule.action is Action.HOLD:
                    link.replies.clear()  # before the request goes: no reply slips by
                elif rule is not None and rule.action is Action.CUT_REPLY:
                    link.cut_on_reply = True
                elif rule is not None:
                    link.cut_after = rule.after
                elif link.cut_after is not None:
                    chunk = chunk[: link.cut_after]
                    link.cut_after -= len(chunk)
                link.upstream.write(chunk)
                await link.upstream.drain()
                if rule is not None:
                    rule.seen.set()
                if link.cut_after is not None and link.cut_after <= 0:
                    break
        link.abort()

    async def _replies(self, reader: asyncio.StreamReader, link: _Link) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(CHUNK):
                await self._flowing.wait()
                await link.replies.wait()
                if link.cut_on_reply or link.swallowing:
                    break
                link.client.write(chunk)
                await link.client.drain()
        link.abort()

    def _match(self, window: bytes) -> Rule | None:
        for rule in self._rules:
            if rule.pattern.search(window):
                rule.hits += 1
                if rule.once:
                    self._rules.remove(rule)
                return rule
        return None
