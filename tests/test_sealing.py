"""Tenant sealing: what one tenant does never shows in what another observes.

The property is non-interference. Tenants A and B act in one *shared* store; each also acts
alone in a *solo* store of the same backend (its own tables, folder or key prefix) where the
other tenant does not exist. Every operation a tenant performs in the shared store must give
what it gives in the tenant's solo store, and after every step each tenant's whole view (its
threads, items, attachments, stored bytes, and what its preview, download and upload URLs
answer) must equal its view in its solo store. So:

- nothing B does changes anything A can observe, and the other way round;
- A reaching for B's objects (the ids collide: both tenants use the same tiny id pools) gets
  exactly what it gets when the object does not exist: ``NotFoundError`` on load, an empty
  page, a no-op delete, 404 from the upload endpoint for a URL A may sign.

Operations go through every Store method and every attachment path: ``create_attachment``,
direct ``upload``, two-phase uploads through the issued URL (the disk store's ASGI app over
``httpx.ASGITransport``, or S3 presigned PUTs), downloads and previews through signed URLs,
``load_attachment`` with ids a client sends (ChatKit building a user message),
``delete_attachment``, ``delete_thread`` (which deletes the bytes of linked attachment stores),
``delete_orphans`` and ``erase_tenant`` (the operator's erasure of one tenant, rows and bytes:
the other tenant's view stays what it is where the erased tenant never existed). Tenant names
come in pairs that differ by case, a trailing space, a zero-width space or unicode
normalization. Attachment ids are chosen by the test (the stores' ``generate_attachment_id``
is replaced), so A and B upload files with the same ids.

Run longer with ``CHATKIT_STORES_SEALING_EXAMPLES=500``; the number of examples and steps run
is printed.
"""

from __future__ import annotations

import asyncio
import os
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    ImageAttachment,
    InferenceOptions,
    Page,
    UserMessageItem,
    UserMessageTextContent,
)
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import (
    DiskAttachmentStore,
    MemoryStore,
    S3AttachmentStore,
    SQLStore,
    TenantError,
)
from chatkit_stores.files import AttachmentStoreBase
from chatkit_stores.operations.erase import erase_tenant
from chatkit_stores.testing import models
from chatkit_stores.testing.models import T0
from conftest import drop_tables

EXAMPLES_ENV = "CHATKIT_STORES_SEALING_EXAMPLES"
DEFAULT_EXAMPLES = {"disk": 6, "s3": 3}
STEPS = 30
SECRET = "sealing-secret-" + "k" * 32
BASE_URL = "http://files.test/files"
MAX_BYTES = 4096

THREADS = ("thr0", "thr1")
ITEMS = ("msg0", "msg1")
ATTACHMENTS = ("atc0", "atc1", "atc2")
HUGE = 10**6
STAMPS = (T0, T0 + timedelta(seconds=1), T0 - timedelta(seconds=1))

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
PAYLOADS = {"png": PNG, "text": "héllo ✓\n".encode(), "too big": b"x" * (MAX_BYTES + 1)}
MIME_TYPES = ("image/png", "text/plain", "text/html")  # text/html is refused (415)
_N = unicodedata.normalize
TENANT_PAIRS = (
    ("acme", "ACME"),
    ("acme", "acme "),
    ("acme", "acme\u200b"),
    (_N("NFC", "café"), _N("NFD", "café")),
    ("1", "01"),
    ("u", "u/.."),
)
"""Tenant names that a sloppy key (case-folding, trimming, normalizing, path-joining) merges."""

VOLATILE_QUERY = {"e", "s", "X-Amz-Date", "X-Amz-Signature", "X-Amz-Credential"}
"""Query parameters that change with the clock: left out when URLs are compared."""

Observation = Any
_tenant = st.sampled_from("AB")
_thread = st.sampled_from(THREADS)
_item = st.sampled_from(ITEMS)
_attachment = st.sampled_from(ATTACHMENTS)
Op = Callable[["World", dict[str, str]], Awaitable[Observation]]


# the worlds


@dataclass
class World:
    """One metadata store with its attachment store and an HTTP client that reaches its URLs."""

    name: str
    store: Store[Any]
    files: AttachmentStoreBase[Any]
    http: httpx.AsyncClient
    token: str
    """A string only this world's URLs contain (its S3 key prefix), replaced when comparing."""
    serves: str
    """The start of the URLs this world's stores issue (other URLs are never fetched)."""
    next_ids: list[str] = field(default_factory=list)

    def attach_ids(self) -> None:
        """Make ``generate_attachment_id`` hand out the ids the test queued."""
        self.files.generate_attachment_id = lambda _mime, _context: self.next_ids.pop()  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.http.aclose()
        if isinstance(self.store, SQLStore):
            await drop_tables(self.store.engine, self.store.table_prefix)
            await self.store.close()


@dataclass
class Worlds:
    shared: World
    solo: dict[str, World]

    def all(self) -> list[World]:
        return [self.shared, *self.solo.values()]


@dataclass
class Counter:
    examples: int = 0
    steps: int = 0
    operations: dict[str, int] = field(default_factory=dict)


# observing


def normalize(world: World, value: Any) -> Any:
    """A comparable form of ``value``: models as JSON, URLs without clock-dependent parts."""
    if isinstance(value, BaseModel):
        return normalize(world, value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {k: normalize(world, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(world, v) for v in value]
    if isinstance(value, str):
        value = value.replace(world.token, "<world>") if world.token else value
        if "://" in value:
            parts = urlsplit(value)
            query = sorted((k, v) for k, v in parse_qsl(parts.query) if k not in VOLATILE_QUERY)
            return parts._replace(query=urlencode(query)).geturl()
    return value


async def outcome(world: World, awaitable: Awaitable[Any]) -> Observation:
    """``("returned", value)`` or ``("raised", type, message)`` for the documented errors."""
    try:
        value = await awaitable
    except (NotFoundError, TenantError, ValueError) as error:
        return normalize(world, ("raised", type(error).__name__, str(error)))
    return normalize(world, ("returned", value))


async def fetch(world: World, method: str, url: str, **kwargs: Any) -> Observation:
    """What an HTTP request answers: status, type, disposition, and the body."""
    response = await world.http.request(method, url, **kwargs)
    body: Any = response.content
    if response.status_code >= 300 and isinstance(world.files, S3AttachmentStore):
        body = None  # S3 error documents carry request ids
    headers = response.headers
    return (
        response.status_code,
        headers.get("content-type"),
        headers.get("content-disposition"),
        body,
    )


async def walk(store: Store[Any], thread_id: str | None, ctx: dict[str, str]) -> list[Any]:
    """Every object of the thread list (``thread_id=None``) or of a thread, two per page."""
    found: list[Any] = []
    after: str | None = None
    for _ in range(50):
        if thread_id is None:
            page: Page[Any] = await store.load_threads(2, after, "asc", ctx)
        else:
            page = await store.load_thread_items(thread_id, after, 2, "desc", ctx)
        found += page.data
        if not page.has_more:
            return found
        after = page.after
    raise AssertionError("pagination did not end")


async def view(world: World, ctx: dict[str, str], ids: dict[str, str]) -> dict[str, Observation]:
    """Everything ``ctx``'s tenant can observe in ``world`` through the pooled ids."""
    seen: dict[str, Observation] = {"threads": await outcome(world, walk(world.store, None, ctx))}
    for name in THREADS:
        seen[f"items of {name}"] = await outcome(world, walk(world.store, ids[name], ctx))
    for name in ATTACHMENTS:
        attachment_id = ids[name]
        try:
            loaded: Attachment | None = await world.store.load_attachment(attachment_id, ctx)
        except NotFoundError:
            loaded = None
        seen[f"attachment {name}"] = normalize(world, loaded)
        stored = await outcome(world, world.files.read(attachment_id, ctx))
        seen[f"bytes of {name}"] = stored
        if stored[0] == "returned":
            url = world.files.download_url(attachment_id, ctx)  # type: ignore[attr-defined]
            seen[f"download of {name}"] = await fetch(world, "GET", url)
        preview = str(loaded.preview_url) if isinstance(loaded, ImageAttachment) else ""
        if preview.startswith(world.serves):
            seen[f"preview of {name}"] = await fetch(world, "GET", preview)
    return seen


# the state machine


class SealingMachine(RuleBasedStateMachine):
    """Every step runs in the shared world and in the acting tenant's solo world."""

    worlds: ClassVar[Worlds]
    run: ClassVar[Callable[[Awaitable[Any]], Any]]
    counter: ClassVar[Counter]

    @classmethod
    def bind(
        cls, worlds: Worlds, run: Callable[[Awaitable[Any]], Any], counter: Counter
    ) -> type[SealingMachine]:
        return type(
            cls.__name__, (cls,), {"worlds": worlds, "run": staticmethod(run), "counter": counter}
        )

    def __init__(self) -> None:
        super().__init__()
        self.counter.examples += 1
        self.suffix = uuid.uuid4().hex[:10]
        self.ids = {name: f"{name}_{self.suffix}" for name in THREADS + ITEMS + ATTACHMENTS}
        self.contexts: dict[str, dict[str, str]] = {}
        self.solo_views: dict[str, dict[str, Observation]] = {}

    @initialize(pair=st.sampled_from(TENANT_PAIRS), swap=st.booleans())
    def choose_tenants(self, pair: tuple[str, str], swap: bool) -> None:
        """Two tenant names that differ only in a way a sloppy key would erase."""
        first, second = reversed(pair) if swap else pair
        # The suffix goes first, so a trailing space stays trailing.
        self.contexts = {
            "A": {"user_id": f"{self.suffix}-{first}"},
            "B": {"user_id": f"{self.suffix}-{second}"},
        }
        for tenant in ("A", "B"):
            self.solo_views[tenant] = self._view(self.worlds.solo[tenant], tenant)

    # running a step

    def _view(self, world: World, tenant: str) -> dict[str, Observation]:
        return self.run(view(world, self.contexts[tenant], self.ids))  # type: ignore[no-any-return]

    def _act(self, tenant: str, step: str, operation: Op, queued_ids: tuple[str, ...] = ()) -> None:
        """Run ``operation`` for ``tenant`` in the shared and its solo world; compare all."""
        self.counter.steps += 1
        name = step.split("(")[0]
        self.counter.operations[name] = self.counter.operations.get(name, 0) + 1
        ctx = self.contexts[tenant]
        results = {}
        for world in (self.worlds.shared, self.worlds.solo[tenant]):
            world.next_ids[:] = list(reversed(queued_ids))
            results[world.name] = self.run(operation(world, ctx))
        shared, solo = results[self.worlds.shared.name], results[self.worlds.solo[tenant].name]
        other = "B" if tenant == "A" else "A"
        assert shared == solo, (
            f"{tenant}: {step} answered differently with {other} present:\n"
            f"  shared store:          {shared!r:.2000}\n"
            f"  store without {other}: {solo!r:.2000}"
        )
        self.solo_views[tenant] = self._view(self.worlds.solo[tenant], tenant)
        self._compare_views(f"{tenant}: {step}")

    def _compare_views(self, step: str) -> None:
        for tenant in ("A", "B"):
            shared = self._view(self.worlds.shared, tenant)
            solo = self.solo_views[tenant]
            for key in sorted(set(shared) | set(solo)):
                assert shared.get(key) == solo.get(key), (
                    f"after {step}, tenant {tenant}'s {key} differs from a store where the other "
                    f"tenant does not exist:\n"
                    f"  shared store: {shared.get(key)!r:.2000}\n"
                    f"  solo store:   {solo.get(key)!r:.2000}"
                )

    # threads and items

    @rule(
        tenant=_tenant,
        thread=_thread,
        at=st.sampled_from(STAMPS),
        title=st.sampled_from(("t", None)),
    )
    def save_thread(self, tenant: str, thread: str, at: datetime, title: str | None) -> None:
        model = models.thread(self.ids[thread], at, title)

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            return await outcome(world, world.store.save_thread(model.model_copy(), ctx))

        self._act(tenant, f"save_thread({thread}, {at}, {title!r})", op)

    @rule(tenant=_tenant, thread=_thread)
    def load_thread(self, tenant: str, thread: str) -> None:
        async def op(world: World, ctx: dict[str, str]) -> Observation:
            return await outcome(world, world.store.load_thread(self.ids[thread], ctx))

        self._act(tenant, f"load_thread({thread})", op)

    @rule(
        tenant=_tenant,
        thread=st.none() | _thread,
        after=st.none() | st.sampled_from(THREADS + ITEMS),
        limit=st.sampled_from((1, 2, HUGE)),
        order=st.sampled_from(("asc", "desc")),
    )
    def load_page(
        self, tenant: str, thread: str | None, after: str | None, limit: int, order: str
    ) -> None:
        """load_threads or load_thread_items with a cursor that may name the other's object."""
        cursor = None if after is None else self.ids[after]

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            if thread is None:
                return await outcome(world, world.store.load_threads(limit, cursor, order, ctx))
            call = world.store.load_thread_items(self.ids[thread], cursor, limit, order, ctx)
            return await outcome(world, call)

        self._act(tenant, f"load_page({thread}, after={after}, {limit}, {order})", op)

    @rule(tenant=_tenant, thread=_thread)
    def delete_thread(self, tenant: str, thread: str) -> None:
        async def op(world: World, ctx: dict[str, str]) -> Observation:
            return await outcome(world, world.store.delete_thread(self.ids[thread], ctx))

        self._act(tenant, f"delete_thread({thread})", op)

    @rule(
        tenant=_tenant,
        thread=_thread,
        item=_item,
        kind=st.sampled_from(("assistant_message", "end_of_turn", "client_tool_call")),
        at=st.sampled_from(STAMPS),
        retry=st.booleans(),
    )
    def add_item(
        self, tenant: str, thread: str, item: str, kind: str, at: datetime, retry: bool
    ) -> None:
        """add_thread_item (or save_item) of an item of a pooled id."""
        model = models.ITEM_BUILDERS[kind](self.ids[thread], at)
        model = model.model_copy(update={"id": self.ids[item]})
        method = "save_item" if retry else "add_thread_item"

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            call = getattr(world.store, method)(self.ids[thread], model.model_copy(), ctx)
            return await outcome(world, call)

        self._act(tenant, f"{method}({thread}, {item}, {kind}, {at})", op)

    @rule(tenant=_tenant, thread=_thread, item=_item)
    def load_item(self, tenant: str, thread: str, item: str) -> None:
        async def op(world: World, ctx: dict[str, str]) -> Observation:
            call = world.store.load_item(self.ids[thread], self.ids[item], ctx)
            return await outcome(world, call)

        self._act(tenant, f"load_item({thread}, {item})", op)

    @rule(tenant=_tenant, thread=_thread, item=_item)
    def delete_item(self, tenant: str, thread: str, item: str) -> None:
        async def op(world: World, ctx: dict[str, str]) -> Observation:
            call = world.store.delete_thread_item(self.ids[thread], self.ids[item], ctx)
            return await outcome(world, call)

        self._act(tenant, f"delete_thread_item({thread}, {item})", op)

    @rule(
        tenant=_tenant,
        thread=_thread,
        item=_item,
        attachments=st.lists(_attachment, max_size=2, unique=True),
    )
    def send_message(self, tenant: str, thread: str, item: str, attachments: list[str]) -> None:
        """A user message with attachment ids the client sent, as ChatKitServer builds it."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            store, thread_id = world.store, self.ids[thread]
            try:
                await store.load_thread(thread_id, ctx)
                copies = [
                    (await store.load_attachment(self.ids[a], ctx)).model_copy(
                        update={"thread_id": thread_id}
                    )
                    for a in attachments
                ]
            except NotFoundError as error:
                return normalize(world, ("raised", "NotFoundError", str(error)))
            message = UserMessageItem(
                id=self.ids[item],
                thread_id=thread_id,
                created_at=T0,
                content=[UserMessageTextContent(text="look")],
                attachments=copies,
                inference_options=InferenceOptions(),
            )
            for copy in copies:
                await store.save_attachment(copy, ctx)
            return await outcome(world, store.add_thread_item(thread_id, message, ctx))

        self._act(tenant, f"send_message({thread}, {item}, attachments={attachments})", op)

    # attachments

    @rule(
        tenant=_tenant,
        attachment=_attachment,
        kind=st.sampled_from(sorted(models.ATTACHMENT_BUILDERS)),
        thread=st.none() | _thread,
    )
    def save_attachment(self, tenant: str, attachment: str, kind: str, thread: str | None) -> None:
        """Store.save_attachment of metadata (no bytes), as ChatKit re-saves attachments."""
        thread_id = None if thread is None else self.ids[thread]
        model = models.ATTACHMENT_BUILDERS[kind](self.ids[attachment], thread_id)

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            return await outcome(world, world.store.save_attachment(model.model_copy(), ctx))

        self._act(tenant, f"save_attachment({attachment}, {kind}, thread={thread})", op)

    @rule(tenant=_tenant, attachment=_attachment)
    def load_attachment(self, tenant: str, attachment: str) -> None:
        """load_attachment with an id a client sent."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            return await outcome(world, world.store.load_attachment(self.ids[attachment], ctx))

        self._act(tenant, f"load_attachment({attachment})", op)

    @rule(
        tenant=_tenant,
        attachment=_attachment,
        mime=st.sampled_from(MIME_TYPES),
        # the payloads' own sizes: S3 binds the declared size into the presigned PUT
        size=st.sampled_from(sorted({len(body) for body in PAYLOADS.values()})),
    )
    def create_attachment(self, tenant: str, attachment: str, mime: str, size: int) -> None:
        """attachments.create: create_attachment, then Store.save_attachment."""
        params = AttachmentCreateParams(name=f"{attachment}.bin", size=size, mime_type=mime)

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            try:
                created = await world.files.create_attachment(params, ctx)
            except ValueError as error:
                return normalize(world, ("raised", type(error).__name__, str(error)))
            await world.store.save_attachment(created, ctx)
            return normalize(world, created)

        step = f"create_attachment({attachment}, {mime}, size={size})"
        self._act(tenant, step, op, queued_ids=(self.ids[attachment],))

    @rule(
        tenant=_tenant,
        attachment=_attachment,
        payload=st.sampled_from(sorted(PAYLOADS)),
        mime=st.sampled_from(MIME_TYPES),
        thread=st.none() | _thread,
    )
    def upload(
        self, tenant: str, attachment: str, payload: str, mime: str, thread: str | None
    ) -> None:
        """A direct upload (the app's own endpoint) of a pooled id."""
        thread_id = None if thread is None else self.ids[thread]

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            call = world.files.upload(
                PAYLOADS[payload],
                name=f"{attachment}.bin",
                mime_type=mime,
                context=ctx,
                thread_id=thread_id,
            )
            return await outcome(world, call)

        step = f"upload({attachment}, {payload}, {mime}, thread={thread})"
        self._act(tenant, step, op, queued_ids=(self.ids[attachment],))

    @rule(
        tenant=_tenant,
        attachment=_attachment,
        payload=st.sampled_from(sorted(PAYLOADS)),
    )
    def upload_to_issued_url(self, tenant: str, attachment: str, payload: str) -> None:
        """The second phase: the client sends the bytes to the URL its attachment carries."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            try:
                pending = await world.store.load_attachment(self.ids[attachment], ctx)
            except NotFoundError as error:
                return normalize(world, ("raised", "NotFoundError", str(error)))
            descriptor = pending.upload_descriptor
            if descriptor is None:
                return "already uploaded"
            url, body = str(descriptor.url), PAYLOADS[payload]
            if not url.startswith(world.serves):
                return "an upload URL this store did not issue"  # metadata saved by hand
            if descriptor.method == "POST":
                files = {"file": (pending.name, body, pending.mime_type)}
                return await fetch(world, "POST", url, files=files)
            return await fetch(world, "PUT", url, content=body, headers=descriptor.headers)

        self._act(tenant, f"upload_to_issued_url({attachment}, {payload})", op)

    @rule(tenant=_tenant, attachment=_attachment)
    def upload_with_own_signature(self, tenant: str, attachment: str) -> None:
        """Disk: a valid upload URL signed for this tenant, for an id only the other may have."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            files = world.files
            if not isinstance(files, DiskAttachmentStore):
                return "not a disk store"
            tenant_key = files.tenant_of(ctx)
            method = files.upload_method
            url = files.signed_url("upload", method, tenant_key, self.ids[attachment], 60)
            return await fetch(world, method, url, files={"file": ("a.png", PNG, "image/png")})

        self._act(tenant, f"upload_with_own_signature({attachment})", op)

    @rule(tenant=_tenant, attachment=_attachment)
    def download(self, tenant: str, attachment: str) -> None:
        """read() and a GET of the tenant's signed download URL."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            attachment_id = self.ids[attachment]
            url = world.files.download_url(attachment_id, ctx)  # type: ignore[attr-defined]
            read = await outcome(world, world.files.read(attachment_id, ctx))
            return read, await fetch(world, "GET", url)

        self._act(tenant, f"download({attachment})", op)

    @rule(tenant=_tenant, attachment=_attachment)
    def delete_attachment(self, tenant: str, attachment: str) -> None:
        """attachments.delete: the attachment store's delete, then Store.delete_attachment."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            attachment_id = self.ids[attachment]
            await world.files.delete_attachment(attachment_id, ctx)
            return await outcome(world, world.store.delete_attachment(attachment_id, ctx))

        self._act(tenant, f"delete_attachment({attachment})", op)

    def teardown(self) -> None:
        """Every example ends erasing A, then B: each erasure leaves the other tenant's view
        as it is where the erased tenant never existed."""
        if self.contexts:
            self.erase_tenant("A", 2)
            self.erase_tenant("B", 500)

    @rule(tenant=_tenant, batch_size=st.sampled_from((1, 500)))
    def erase_tenant(self, tenant: str, batch_size: int) -> None:
        """The operator's tenant erasure (chatkit-stores erase-tenant): what it removes is what
        it removes where the other tenant does not exist, and it leaves the tenant nothing."""

        async def op(world: World, ctx: dict[str, str]) -> Observation:
            key = world.store.tenant_of(ctx)  # type: ignore[attr-defined]
            files = world.files
            report = await erase_tenant(world.store, key, files=files, batch_size=batch_size)
            left = await erase_tenant(world.store, key, files=files, dry_run=True)
            assert left.total == 0, f"erase_tenant left {left.summary(dry_run=True)}"
            return normalize(world, {k: v for k, v in vars(report).items() if k != "tenant"})

        self._act(tenant, f"erase_tenant(batch_size={batch_size})", op)

    @rule()
    def delete_orphans(self) -> None:
        """The operator's orphan collection, run in every world."""
        self.counter.steps += 1
        self.counter.operations["delete_orphans"] = (
            self.counter.operations.get("delete_orphans", 0) + 1
        )
        for world in self.worlds.all():
            self.run(world.files.delete_orphans(older_than=timedelta(0)))
        for tenant in ("A", "B"):
            self.solo_views[tenant] = self._view(self.worlds.solo[tenant], tenant)
        self._compare_views("delete_orphans()")


# building worlds per backend


class LeakyMemoryStore(MemoryStore[Any]):
    """A deliberately broken store: load_attachment falls back to any tenant's attachment."""

    async def load_attachment(self, attachment_id: str, context: Any) -> Attachment:
        for (_tenant, key), row in self._attachments.items():
            if key == attachment_id and _tenant != self.tenant_of(context):
                return row.model.model_copy(deep=True)
        return await super().load_attachment(attachment_id, context)


class CaseFoldingMemoryStore(MemoryStore[Any]):
    """A deliberately broken store: tenant keys compare case-insensitively (a MySQL collation)."""

    def tenant_of(self, context: Any) -> str:
        return super().tenant_of(context).lower()


class SharedFolderDisk(DiskAttachmentStore[Any]):
    """A deliberately broken disk store: the path ignores the tenant."""

    def path(self, tenant: str, attachment_id: str) -> Path:
        return super().path("everyone", attachment_id)


LEAKS: dict[str, tuple[type[MemoryStore[Any]], type[DiskAttachmentStore[Any]]]] = {
    "load_attachment of another tenant": (LeakyMemoryStore, DiskAttachmentStore),
    "tenant keys folded to lower case": (CaseFoldingMemoryStore, DiskAttachmentStore),
    "one folder for all tenants": (MemoryStore, SharedFolderDisk),
}


async def build_world(
    name: str, metadata: str, files: str, tmp_path: Path, url: str | None, s3: Any, leak: str
) -> World:
    memory_class, disk_class = LEAKS.get(leak, (MemoryStore, DiskAttachmentStore))
    store: Store[Any]
    if metadata == "memory":
        store = memory_class()
    elif metadata == "sqlite":
        store = SQLStore.from_url(f"sqlite:///{tmp_path / name}.db")
    else:
        assert url is not None
        sql = SQLStore.from_url(url, table_prefix=f"cks_{name}_")
        await sql.create_schema()
        store = sql
    limits: dict[str, Any] = {
        "max_bytes": MAX_BYTES,
        "allowed_mime_types": {"image/png", "text/plain", "application/pdf"},
    }
    if files == "disk":
        disk = disk_class(
            store, tmp_path / f"files-{name}", base_url=BASE_URL, secret=SECRET, **limits
        )
        app = Starlette(routes=[Mount("/files", disk.asgi_app())])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        world = World(name, store, disk, http, token="", serves=BASE_URL)
    else:
        client, bucket, endpoint = s3
        token = f"{name}-{uuid.uuid4().hex[:8]}"
        bucket_store = S3AttachmentStore(store, bucket, prefix=f"{token}/", client=client, **limits)
        world = World(name, store, bucket_store, httpx.AsyncClient(), token, serves=endpoint)
    world.attach_ids()
    return world


def seal(
    metadata: str,
    files: str,
    tmp_path: Path,
    url: str | None,
    s3: Any,
    examples: int,
    leak: str = "",
    shrink: bool = True,
) -> Counter:
    """Run the sealing state machine on fresh worlds; return what ran."""
    counter = Counter()
    with asyncio.Runner() as runner:

        async def build() -> Worlds:
            made = [
                await build_world(name, metadata, files, tmp_path, url, s3, leak)
                for name in ("shared", "solo_a", "solo_b")
            ]
            return Worlds(shared=made[0], solo={"A": made[1], "B": made[2]})

        worlds = runner.run(build())
        try:
            machine = SealingMachine.bind(worlds, runner.run, counter)
            chosen = settings(
                max_examples=examples,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                # The default run is the same every time (CI); longer runs explore anew.
                derandomize=not os.environ.get(EXAMPLES_ENV),
                phases=[Phase.generate, *([Phase.shrink] if shrink else [])],
                suppress_health_check=[HealthCheck.too_slow],
            )
            run_state_machine_as_test(machine, settings=chosen)
        finally:
            for world in worlds.all():
                runner.run(world.close())
    return counter


@pytest.fixture
def s3_bucket(s3_client: Any, bucket: str, s3_endpoint: str) -> tuple[Any, str, str]:
    return s3_client, bucket, s3_endpoint


def _examples(files: str) -> int:
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(raw) if raw else DEFAULT_EXAMPLES[files]


@pytest.mark.parametrize(
    ("metadata", "files"),
    [
        ("memory", "disk"),
        ("sqlite", "disk"),
        ("postgres", "disk"),
        ("mysql", "disk"),
        ("sqlite", "s3"),
    ],
)
def test_tenants_are_sealed(
    metadata: str,
    files: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Random operations of two tenants with colliding ids: neither can observe the other."""
    url = None if metadata in ("memory", "sqlite") else request.getfixturevalue(f"{metadata}_url")
    s3 = request.getfixturevalue("s3_bucket") if files == "s3" else None
    started = time.perf_counter()
    counter = seal(metadata, files, tmp_path, url, s3, _examples(files))
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\n[sealing] {metadata}+{files}: {counter.examples} examples, {counter.steps} steps "
            f"({len(counter.operations)} kinds of operation) in {seconds:.1f} s"
        )
    assert counter.steps > 0
    assert len(counter.operations) >= 10, f"too few kinds of operation ran: {counter.operations}"
    assert counter.operations["erase_tenant"] >= 2 * counter.examples


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_a_leak_is_caught(leak: str, tmp_path: Path) -> None:
    """The machine fails on deliberately leaky stores (so a pass means something)."""
    with pytest.raises(AssertionError, match=r"differs from a store where|answered differently"):
        seal("memory", "disk", tmp_path, None, None, examples=200, leak=leak, shrink=False)


def test_a_leaky_erasure_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine fails when erase_tenant deletes by id without the tenant (the ids collide)."""
    from sqlalchemy import select

    from chatkit_stores.operations import erase

    async def by_id_alone(self: Any, kind: str) -> Any:
        table = self.tables[kind]
        mine = select(table.c.id).where(table.c.tenant == self.tenant).limit(self.batch_size)
        async with self.store.engine.connect() as conn:
            ids = list((await conn.execute(mine)).scalars())
            if ids:
                await conn.execute(table.delete().where(table.c.id.in_(ids)))
        return erase._Batch(ids)

    monkeypatch.setattr(erase._TableRows, "delete_batch", by_id_alone)
    with pytest.raises(AssertionError, match=r"differs from a store where|answered differently"):
        seal("sqlite", "disk", tmp_path, None, None, examples=30, shrink=False)
