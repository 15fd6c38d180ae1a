"""Hostile input, fuzzed with Hypothesis: store string parameters and the upload endpoint.

Store parameters (ids, cursors, ``limit``, ``order``, the tenant in the context): every call
either succeeds or raises a documented error (``NotFoundError``, ``ValueError``,
``TenantError``), exactly as ``MemoryStore`` (the reference model) does; never a database or
encoding error. A victim tenant's threads, items and attachments, seeded with the ids the
hostile strings are mutated from, never change and never show up in an answer.

The upload endpoint (the ``DiskAttachmentStore`` ASGI app, called with raw ASGI messages so any
header, path or body can be sent): hostile signatures, methods, paths, Content-Type and
Content-Length headers, multipart bodies and file names. Every answer is below 500; a refused
upload leaves no file (final or temporary) and the attachment stays pending; a fully valid
request succeeds and stores exactly the bytes sent.

The number of hostile inputs tried is printed; ``CHATKIT_STORES_FUZZ_EXAMPLES`` runs longer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from chatkit.store import NotFoundError, Store
from chatkit.types import AttachmentCreateParams, ImageAttachment, Page
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, MemoryStore, SQLStore, TenantError, UploadRejected
from chatkit_stores.files.signing import Grant
from chatkit_stores.testing import models
from chatkit_stores.testing.models import T0
from conftest import drop_tables

EXAMPLES_ENV = "CHATKIT_STORES_FUZZ_EXAMPLES"
SECRET = "fuzz-secret-" + "f" * 32
SECRET_MARK = "victim-secret"
VICTIM_THREADS = ("thr_victim", "thr_Victim2")
VICTIM_ITEMS = ("msg_victim", "msg_victim2")
VICTIM_ATTACHMENTS = ("atc_victim", "atc_victim2")
VICTIM_IDS = VICTIM_THREADS + VICTIM_ITEMS + VICTIM_ATTACHMENTS

HOSTILE_TEXT = (
    "",
    " ",
    "\t",
    "\r\n",
    "\x00",
    "thr\x00victim",
    "\ud800",
    "thr_victim\udfff",
    "x" * 255,
    "x" * 256,
    "\U0001f600" * 255,
    "\U0001f600" * 256,
    "' OR '1'='1",
    "'; DROP TABLE ckf_threads; --",
    '" OR ""="',
    "%",
    "thr_%",
    "thr\\_victim",
    "_",
    "*",
    "$1",
    "?",
    ":id",
    "\\",
    "`",
    "\u00a0",
    "\u200b",
    "\ufeff",
    "\u202e",
    "../..",
    "/",
    "null",
    "None",
    "0",
    "-1",
)
"""Strings that have broken stores: NUL, lone surrogates, lengths at and over the limit,
SQL and LIKE metacharacters, invisible and direction characters, path pieces."""


def _mutations(value: str) -> list[str]:
    """Ids a sloppy key would confuse with ``value``."""
    return [
        value.upper(),
        value.lower(),
        value.swapcase(),
        value + " ",
        " " + value,
        value + "\x00",
        value + "\u200b",
        value[:-1] + "_",
        value[:-1] + "%",
        value[:-1],
        value + value[-1],
        unicodedata.normalize("NFD", value + "é"),
        value.replace("_", "-"),
        value + "'",
    ]


_text = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.builds(lambda: "y" * 100_000),  # built lazily: a huge literal makes a huge repr
    st.sampled_from([m for v in VICTIM_IDS for m in _mutations(v)]),
    st.sampled_from(VICTIM_IDS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=250, max_size=260),
)
_cursor = st.none() | _text
_limit = st.one_of(
    st.sampled_from([0, -1, 1, 2, 10**6, 2**31, 2**63, 2**64, 10**100, True, False]),
    st.sampled_from([1.5, float("nan"), "10", None, b"1"]),
    st.integers(),
)
_order = st.one_of(
    st.sampled_from(["asc", "desc", "ASC", "Desc", " asc", "asc\x00", "", None, 1, b"asc"]), _text
)


def _settings(default: int) -> settings:
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    return settings(
        max_examples=int(raw) if raw else default,
        derandomize=not raw,  # the default run is the same every time (CI); longer runs explore
        deadline=None,
        database=None,
        phases=[phase for phase in Phase if phase is not Phase.explain],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def report(capsys: pytest.CaptureFixture[str], what: str, count: int, started: float) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {what}: {count} hostile inputs in {time.perf_counter() - started:.1f} s")


# store parameters


@dataclass
class Call:
    """One store call with hostile arguments; ``run`` makes it on any store."""

    name: str
    arguments: dict[str, Any]
    run: Callable[[Store[Any], Any], Awaitable[Any]]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r:.60}" for k, v in self.arguments.items())
        return f"{self.name}({shown})"


def _calls() -> st.SearchStrategy[Call]:
    def call(name: str, run: Callable[..., Awaitable[Any]], **args: Any) -> st.SearchStrategy[Call]:
        return st.fixed_dictionaries(args).map(
            lambda a: Call(name, a, lambda store, ctx: run(store, ctx, **a))
        )

    return st.one_of(
        call("load_thread", lambda s, c, t: s.load_thread(t, c), t=_text),
        call(
            "load_threads",
            lambda s, c, limit, after, order: s.load_threads(limit, after, order, c),
            limit=_limit,
            after=_cursor,
            order=_order,
        ),
        call(
            "load_thread_items",
            lambda s, c, t, after, limit, order: s.load_thread_items(t, after, limit, order, c),
            t=_text,
            after=_cursor,
            limit=_limit,
            order=_order,
        ),
        call("load_item", lambda s, c, t, i: s.load_item(t, i, c), t=_text, i=_text),
        call("load_attachment", lambda s, c, a: s.load_attachment(a, c), a=_text),
        call("delete_thread", lambda s, c, t: s.delete_thread(t, c), t=_text),
        call(
            "delete_thread_item", lambda s, c, t, i: s.delete_thread_item(t, i, c), t=_text, i=_text
        ),
        call("delete_attachment", lambda s, c, a: s.delete_attachment(a, c), a=_text),
        call(
            "save_thread",
            lambda s, c, t: s.save_thread(_with_id(models.thread(None, T0, "mine"), t), c),
            t=_text,
        ),
        call(
            "add_thread_item",
            lambda s, c, t, i: s.add_thread_item(t, _item(t, i), c),
            t=_text,
            i=_text,
        ),
        call("save_item", lambda s, c, t, i: s.save_item(t, _item(t, i), c), t=_text, i=_text),
        call(
            "save_attachment",
            lambda s, c, a, t: s.save_attachment(
                models.file_attachment().model_copy(update={"id": a, "thread_id": t}), c
            ),
            a=_text,
            t=st.none() | _text,
        ),
    )


def _item(thread_id: str, item_id: str) -> Any:
    return _with_id(models.assistant_message(thread_id, T0, text="mine"), item_id)


def _with_id(model: Any, new_id: str) -> Any:
    """``model`` with ``id`` replaced (the builders give falsy ids a random one)."""
    return model.model_copy(update={"id": new_id})


def _contexts(victim: str) -> st.SearchStrategy[Any]:
    """The attacker's context: its own tenant, a hostile one, or a near-copy of the victim's."""
    return st.one_of(
        st.just({"user_id": "attacker"}),
        st.builds(lambda t: {"user_id": t}, _text),
        st.builds(lambda t: {"tenant_id": t, "user_id": victim}, _text),
        st.builds(lambda t: {"user_id": t}, st.sampled_from(_mutations(victim))),
        st.sampled_from(
            [{}, {"user_id": None}, {"user_id": 7}, {"user_id": True}, {"user_id": ["a"]}, None]
        ),
        st.sampled_from([{"user_id": b"victim"}, {"user_id": 1.5}, object()]),
    )


def _view(value: Any) -> Any:
    if isinstance(value, Page):
        return ([_view(v) for v in value.data], value.has_more, value.after)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


DOCUMENTED = (NotFoundError, TenantError, ValueError)


async def _outcome(awaitable: Awaitable[Any]) -> tuple[str, Any]:
    try:
        return "returned", _view(await awaitable)
    except DOCUMENTED as error:
        if isinstance(error, UnicodeError) or type(error).__module__.startswith("sqlalchemy"):
            raise  # a ValueError subclass, but not a documented answer
        return "raised", type(error).__name__


async def _seed(store: Store[Any], victim: dict[str, str]) -> None:
    for thread_id in VICTIM_THREADS:
        await store.save_thread(models.thread(thread_id, T0, SECRET_MARK), victim)
        for item_id in VICTIM_ITEMS:
            item = models.assistant_message(thread_id, T0, text=SECRET_MARK)
            await store.add_thread_item(thread_id, item.model_copy(update={"id": item_id}), victim)
    for attachment_id in VICTIM_ATTACHMENTS:
        attachment = models.file_attachment(attachment_id, VICTIM_THREADS[0])
        await store.save_attachment(attachment.model_copy(update={"name": SECRET_MARK}), victim)


async def _everything(store: Store[Any], context: Any) -> Any:
    """All a tenant has: threads, their items, the pooled attachments (TenantError if none)."""
    threads = await store.load_threads(10**6, None, "asc", context)
    items = [await store.load_thread_items(t.id, None, 10**6, "asc", context) for t in threads.data]
    attachments = [await _outcome(store.load_attachment(a, context)) for a in VICTIM_ATTACHMENTS]
    return _view(threads), [_view(page) for page in items], attachments


async def _empty(store: SQLStore[Any]) -> None:
    """Create this test's tables, or empty them: the reference model starts empty too."""
    await store.create_schema()
    async with store.engine.begin() as connection:
        for table in (store.tables.items, store.tables.attachments, store.tables.threads):
            await connection.execute(table.delete())


def _sql_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store[Any]:
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return SQLStore.from_url(f"sqlite:///{tmp_path / 'fuzz.db'}")
    url = request.getfixturevalue(f"{backend}_url")
    return SQLStore.from_url(url, table_prefix="ckf_")


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "mysql"])
def test_store_parameters(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hostile ids, cursors, limits, orders and tenants: documented errors, no leak, no change."""
    victim = {"user_id": f"victim-{uuid.uuid4().hex}"}
    store = _sql_store(backend, tmp_path, request)
    reference: MemoryStore[Any] = MemoryStore()
    count = 0
    started = time.perf_counter()
    with asyncio.Runner() as runner:
        if isinstance(store, SQLStore):
            runner.run(_empty(store))
        for seeded in (store, reference):
            runner.run(_seed(seeded, victim))
        before = runner.run(_everything(store, victim))
        assert SECRET_MARK in repr(before)

        @given(call=_calls(), context=_contexts(victim["user_id"]))
        @_settings(150)
        def attack(call: Call, context: Any) -> None:
            nonlocal count
            count += 1
            if context == victim:
                return
            expected = runner.run(_outcome(call.run(reference, context)))
            got = runner.run(_outcome(call.run(store, context)))
            # Two bad inputs (a bad limit and a bad tenant): either documented error may win.
            kinds = {got[1], expected[1]} if got[0] == expected[0] == "raised" else set()
            precedence = kinds == {"ValueError", "TenantError"}
            assert got == expected or precedence, (
                f"{call} with context {context!r:.80}:\n  store: {got!r:.300}\n"
                f"  reference model (MemoryStore): {expected!r:.300}"
            )
            assert SECRET_MARK not in repr(got), f"{call} showed the victim's data: {got!r:.300}"
            mine = runner.run(_outcome(_everything(store, context)))
            theirs = runner.run(_outcome(_everything(reference, context)))
            assert mine == theirs, f"after {call}, the caller's data differs from the reference"
            assert runner.run(_everything(store, victim)) == before, f"{call} changed the victim"

        try:
            attack()
        finally:
            if isinstance(store, SQLStore):
                runner.run(drop_tables(store.engine, store.table_prefix))
                runner.run(store.close())
    report(capsys, f"store parameters on {backend}", count, started)
    assert count > 0


# attachment store parameters


def _disk(tmp_path: Path, store: Store[Any] | None = None, **options: Any) -> Any:
    """A disk attachment store under ``tmp_path/files`` (metadata in memory by default)."""
    return DiskAttachmentStore(
        store or MemoryStore(),
        tmp_path / "files",
        base_url="http://files.test/files",
        secret=SECRET,
        **options,
    )


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_attachment_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hostile ids, names, MIME types, sizes and tenants given to the disk attachment store."""
    victim = {"user_id": "victim"}
    disk = _disk(tmp_path, max_bytes=1024, allowed_mime_types={"image/png", "text/plain"})
    count = 0
    started = time.perf_counter()
    mime = st.one_of(
        st.sampled_from(
            ["text/plain", "TEXT/PLAIN", "text/plain; charset=utf-8", "text/html", "image/svg+xml"]
        ),
        st.sampled_from(["", " ", "text/", "/plain", "text/plain\x00", "text/plain\r\nX: y"]),
        _text,
    )
    content = st.one_of(st.binary(max_size=64), st.just(b"z" * 1025))
    with asyncio.Runner() as runner:
        secret_file = runner.run(
            disk.upload(b"secret", name="s.txt", mime_type="text/plain", context=victim)
        )
        ids = [secret_file.id, *VICTIM_ATTACHMENTS]

        async def act(action: str, value: str, context: Any, mime_type: str, data: bytes) -> Any:
            if action == "read":
                return await disk.read(value, context)
            if action == "delete":
                return await disk.delete_attachment(value, context)
            if action == "download_url":
                return disk.download_url(value, context)
            if action == "upload":
                return await disk.upload(
                    data, name=value, mime_type=mime_type, context=context, thread_id=value
                )
            params = AttachmentCreateParams(name=value, size=len(data), mime_type=mime_type)
            return await disk.create_attachment(params, context)

        @given(
            action=st.sampled_from(["read", "delete", "download_url", "upload", "create"]),
            value=st.one_of(_text, st.sampled_from(ids), st.sampled_from(_mutations(ids[0]))),
            context=_contexts("victim"),
            mime_type=mime,
            data=content,
        )
        @_settings(150)
        def attack(action: str, value: str, context: Any, mime_type: str, data: bytes) -> None:
            nonlocal count
            count += 1
            if context == victim:
                return
            _, answer = runner.run(_outcome(act(action, value, context, mime_type, data)))
            assert b"secret" not in repr(answer).encode(), f"{action}({value!r:.60}) leaked"
            assert runner.run(disk.read(secret_file.id, victim)) == b"secret"
            for path in _files_under(disk.root):
                relative = path.relative_to(disk.root).parts
                assert len(relative) == 2 and relative[0].startswith("t_"), path
                assert relative[1].startswith("a_"), f"a temporary file was left: {path}"

        attack()
    report(capsys, "attachment store parameters", count, started)
    assert count > 0


# the upload endpoint


SIGNATURES = (
    "valid",
    "other tenant's valid URL",
    "tampered signature",
    "missing signature",
    "missing tenant",
    "missing expiry",
    "no query",
    "expired",
    "signed for another method",
    "download URL",
    "forged tenant",
    "another attachment",
    "garbage expiry",
    "huge expiry",
    "garbage tenant",
    "duplicated parameters",
    "non-ASCII signature",
    "non-ASCII tenant",
)
VALID_SIGNATURES = ("valid", "other tenant's valid URL")
PATHS = ("exact", "traversal", "extra segment", "upper case", "NUL", "long", "empty", "encoded")
PADDING = 128 * 1024
"""An extra form field larger than the limit and the room for multipart framing together."""
FILE_NAMES = ("cat.png", "../../etc/passwd", "a\x00b.png", "é\u202egnp.exe", "x" * 1000, "", '"')
PART_TYPES = ("image/png", "text/plain", None, "text/html", "image/svg+xml", "IMAGE/PNG", "x")
LENGTHS = ("correct", "missing", "smaller", "larger", "huge", "negative", "garbage", "float")
BODIES = (
    "multipart",
    "no file field",
    "field named File",
    "two file fields",
    "no closing boundary",
    "garbage",
    "empty",
    "raw",
)
CONTENT_TYPES = (
    "multipart",
    "multipart without boundary",
    "multipart with a long boundary",
    "text/html",
    "image/png",
    "none",
    "garbage",
)


@dataclass(frozen=True)
class Upload:
    """One hostile request to the upload endpoint, by the names of its parts."""

    method: str
    signature: str
    path: str
    content_type: str
    part_type: str | None
    file_name: str
    body: str
    length: str
    payload: bytes
    chunk: int
    disconnect: bool


HOSTILE_PARTS: dict[str, st.SearchStrategy[Any]] = {
    "method": st.sampled_from(["other", "GET", "DELETE", "PATCH", "HEAD"]),
    "signature": st.sampled_from(SIGNATURES[2:]),
    "path": st.sampled_from(PATHS[1:-1]),
    "content_type": st.sampled_from(CONTENT_TYPES[1:]),
    "part_type": st.sampled_from(PART_TYPES[3:]),
    "body": st.sampled_from(BODIES),
    "length": st.sampled_from(LENGTHS[1:]),
    "payload": st.just(b"q" * 4097),
    "disconnect": st.just(True),
}
"""For each part of a request, what can be wrong with it."""


@st.composite
def _uploads(draw: st.DrawFn, upload_method: str) -> Upload:
    """A valid request with up to three of its parts made hostile (none, sometimes)."""
    valid: dict[str, Any] = {
        "method": "own",
        "signature": draw(st.sampled_from(VALID_SIGNATURES)),
        "path": "exact",
        "content_type": "multipart" if upload_method == "POST" else "image/png",
        "part_type": draw(st.sampled_from(PART_TYPES[:3])),
        "file_name": draw(st.sampled_from(FILE_NAMES)),
        "body": "multipart" if upload_method == "POST" else "raw",
        "length": "correct",
        "payload": draw(st.binary(min_size=1, max_size=300)),
        "chunk": draw(st.sampled_from([1, 7, 64, 4096, 1 << 20])),
        "disconnect": False,
    }
    broken = draw(st.sets(st.sampled_from(sorted(HOSTILE_PARTS)), max_size=3))
    for part in sorted(broken):
        valid[part] = draw(HOSTILE_PARTS[part])
    return Upload(**valid)


def _query(disk: DiskAttachmentStore[Any], case: str, method: str, attachment_id: str) -> str:
    grant = Grant(method, "alice", attachment_id)
    good = dict(parse_qsl(disk.signer.query(grant, 60)))
    forged = {"t": dict(parse_qsl(disk.signer.query(Grant(method, "mallory", "x"), 60)))["t"]}
    changes: dict[str, dict[str, str] | None] = {
        "valid": {},
        "other tenant's valid URL": dict(
            parse_qsl(disk.signer.query(Grant(method, "mallory", attachment_id), 60))
        ),
        "tampered signature": {"s": good["s"][:-1] + ("A" if good["s"][-1] != "A" else "B")},
        "expired": dict(parse_qsl(disk.signer.query(grant, -5))),
        "signed for another method": dict(
            parse_qsl(
                disk.signer.query(
                    Grant("PUT" if method == "POST" else "POST", "alice", attachment_id), 60
                )
            )
        ),
        "download URL": dict(
            parse_qsl(disk.signer.query(Grant("GET", "alice", attachment_id), 60))
        ),
        "forged tenant": forged,
        "another attachment": dict(
            parse_qsl(disk.signer.query(Grant(method, "alice", "atc_x"), 60))
        ),
        "garbage expiry": {"e": "soon"},
        "huge expiry": {"e": "9" * 5000},
        "garbage tenant": {"t": "!!!%%%"},
        "non-ASCII signature": {"s": good["s"][:-1] + "é"},
        "non-ASCII tenant": {"t": "é" + good["t"]},
        "duplicated parameters": None,
        "no query": None,
    }
    if case in ("missing signature", "missing tenant", "missing expiry"):
        key = {"missing signature": "s", "missing tenant": "t", "missing expiry": "e"}[case]
        return urlencode({k: v for k, v in good.items() if k != key})
    if case == "no query":
        return ""
    if case == "duplicated parameters":
        return urlencode(good) + "&t=" + forged["t"] + "&s=AAAA"
    change = changes[case]
    assert change is not None
    return urlencode(good | change)


def _path(case: str, attachment_id: str) -> str:
    return {
        "exact": f"/upload/{attachment_id}",
        "traversal": f"/upload/../upload/{attachment_id}",
        "extra segment": f"/upload/{attachment_id}/x",
        "upper case": f"/upload/{attachment_id.upper()}",
        "NUL": f"/upload/{attachment_id}\x00",
        "long": f"/upload/{attachment_id}{'a' * 5000}",
        "empty": "/upload/",
        "encoded": f"/upload/{attachment_id}",  # what a server gives for %61tc_...: the same
    }[case]


def _body(upload: Upload, boundary: str) -> bytes:
    def part(name: str, data: bytes) -> bytes:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        head += f'; filename="{upload.file_name}"\r\n'
        if upload.part_type is not None:
            head += f"Content-Type: {upload.part_type}\r\n"
        return head.encode("utf-8", "replace") + b"\r\n" + data + b"\r\n"

    end = f"--{boundary}--\r\n".encode()
    return {
        "multipart": part("file", upload.payload) + end,
        "no file field": part("other", upload.payload) + end,
        "field named File": part("File", upload.payload) + end,
        "two file fields": part("file", upload.payload) + part("file", b"second") + end,
        "no closing boundary": part("file", upload.payload),
        "garbage": b"\x00\xff garbage --" + upload.payload,
        # not drawn by the fuzzer (too slow in 1-byte chunks): the catalogue sends it
        "padded with another field": part("padding", b"p" * PADDING)
        + part("file", upload.payload)
        + end,
        "empty": b"",
        "raw": upload.payload,
    }[upload.body]


def _headers(upload: Upload, body: bytes, boundary: str) -> list[tuple[bytes, bytes]]:
    content_type = {
        "multipart": f"multipart/form-data; boundary={boundary}",
        "multipart without boundary": "multipart/form-data",
        "multipart with a long boundary": f"multipart/form-data; boundary={'b' * 300}",
        "text/html": "text/html",
        "image/png": "image/png",
        "garbage": "\x7f;;;=",
        "none": None,
    }[upload.content_type]
    length = {
        "correct": str(len(body)),
        "missing": None,
        "smaller": str(max(len(body) // 2, 0)),
        "larger": str(len(body) + 10),
        "huge": "9" * 30,
        "negative": "-1",
        "garbage": "ten",
        "float": "1e3",
    }[upload.length]
    headers = [(b"host", b"files.test")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if length is not None:
        headers.append((b"content-length", length.encode()))
    return headers


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    disconnect: bool,
) -> tuple[int, bytes]:
    """Call an ASGI app with raw messages; return the status and body it answered."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 4000),
        "server": ("files.test", 80),
    }
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
    ]
    if disconnect:
        messages = [*messages[: len(messages) // 2], {"type": "http.disconnect"}]
    else:
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def _must_succeed(upload: Upload, upload_method: str) -> bool:
    """Whether ``upload`` is a well-formed, properly signed request within the limits."""
    good_type = upload.part_type in ("image/png", "text/plain", None, "IMAGE/PNG")
    if upload_method == "POST":
        body_ok = upload.body == "multipart" and upload.content_type == "multipart" and good_type
    else:
        body_ok = upload.body == "raw" and upload.content_type in ("image/png", "none")
    return (
        upload.method == "own"
        and upload.signature in VALID_SIGNATURES
        and upload.path in ("exact", "encoded")
        and body_ok
        and len(upload.payload) <= 4096
        and upload.length in ("correct", "missing", "smaller", "larger", "negative")
        and not upload.disconnect
    )


def _may_succeed(upload: Upload, upload_method: str) -> bool:
    """Whether ``upload`` may be accepted: signed, routed, and (POST) well-formed multipart."""
    well_formed = upload_method == "PUT" or (
        upload.body == "multipart" and upload.content_type == "multipart"
    )
    return (
        upload.method == "own"
        and upload.signature in VALID_SIGNATURES
        and upload.path in ("exact", "encoded")
        and well_formed
        and not upload.disconnect
    )


@pytest.fixture(params=["POST", "PUT"])
def upload_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_upload_endpoint(
    upload_method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile requests to the upload endpoint: never 5xx; refused means nothing written."""
    store = SQLStore.from_url(f"sqlite:///{tmp_path / 'meta.db'}")
    disk = _disk(
        tmp_path,
        store=store,
        max_bytes=4096,
        allowed_mime_types={"image/png", "text/plain"},
        upload_method=upload_method,
    )
    app = disk.asgi_app()
    tried, statuses = 0, {}
    started = time.perf_counter()
    with asyncio.Runner() as runner:

        async def pending(tenant: str, attachment_id: str) -> None:
            disk.generate_attachment_id = lambda _m, _c: attachment_id  # type: ignore[method-assign]
            params = AttachmentCreateParams(name="cat.png", size=10, mime_type="image/png")
            created = await disk.create_attachment(params, {"user_id": tenant})
            await store.save_attachment(created, {"user_id": tenant})

        async def uploaded(tenant: str, attachment_id: str) -> bool:
            loaded = await store.load_attachment(attachment_id, {"user_id": tenant})
            return loaded.upload_descriptor is None

        @given(upload=_uploads(upload_method))
        @_settings(300)
        def attack(upload: Upload) -> None:
            nonlocal tried
            tried += 1
            attachment_id = f"atc_{uuid.uuid4().hex}"
            for tenant in ("alice", "mallory"):  # the same id in both tenants
                runner.run(pending(tenant, attachment_id))
            own = upload_method
            method = {"own": own, "other": "PUT" if own == "POST" else "POST"}.get(
                upload.method, upload.method
            )
            boundary = "fuzzb0undary"
            body = _body(upload, boundary)
            chunks = [body[i : i + upload.chunk] for i in range(0, len(body), upload.chunk)]
            status, answer = runner.run(
                asgi_request(
                    app,
                    method,
                    _path(upload.path, attachment_id),
                    _query(disk, upload.signature, own, attachment_id),
                    _headers(upload, body, boundary),
                    chunks,
                    upload.disconnect,
                )
            )
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, f"{upload}: {status} {answer[:200]!r}"
            owner = "mallory" if upload.signature == "other tenant's valid URL" else "alice"
            bystander = "alice" if owner == "mallory" else "mallory"
            done = {t: runner.run(uploaded(t, attachment_id)) for t in ("alice", "mallory")}
            on_disk = {t: disk.path(t, attachment_id).is_file() for t in ("alice", "mallory")}
            assert not done[bystander] and not on_disk[bystander], f"{upload} reached {bystander}"
            temporary = [p for p in _files_under(disk.root) if p.name.endswith(".part")]
            assert temporary == [], f"{upload} left temporary files"
            if status != 200:
                assert status >= 400, f"{upload}: {status}"
                assert not done[owner] and not on_disk[owner], f"{upload}: {status} but written"
            else:
                accepted = f"{upload} was accepted: {answer[:200]!r}"
                assert _may_succeed(upload, upload_method), accepted
                assert done[owner] and on_disk[owner]
                stored = disk.path(owner, attachment_id).read_bytes()
                sent = upload.payload if upload_method == "POST" else body  # PUT: the raw body
                assert stored == sent, f"{upload}: stored {len(stored)} bytes"
            if _must_succeed(upload, upload_method):
                assert status == 200, f"a valid upload was refused: {upload}: {answer[:300]!r}"

        try:
            attack()
        finally:
            runner.run(store.close())
    report(capsys, f"upload endpoint ({upload_method}); statuses {statuses}", tried, started)
    assert 200 in statuses and len(statuses) >= 4, statuses


# regressions the fuzzing found


async def _one_upload(
    tmp_path: Path, upload: Upload, chunk: int
) -> tuple[int, DiskAttachmentStore[Any], str]:
    disk = _disk(tmp_path, allowed_mime_types={"image/png"})
    context = {"user_id": "alice"}
    params = AttachmentCreateParams(name="a.png", size=10, mime_type="image/png")
    created = await disk.create_attachment(params, context)
    await disk.store.save_attachment(created, context)
    body = _body(upload, "b0undary")
    status, _ = await asgi_request(
        disk.asgi_app(),
        "POST",
        f"/upload/{created.id}",
        _query(disk, "valid", "POST", created.id),
        _headers(upload, body, "b0undary"),
        [body[i : i + chunk] for i in range(0, len(body), chunk)],
        disconnect=False,
    )
    return status, disk, created.id


def _valid_upload(**changes: Any) -> Upload:
    fields: dict[str, Any] = {
        "method": "own",
        "signature": "valid",
        "path": "exact",
        "content_type": "multipart",
        "part_type": "image/png",
        "file_name": "a.png",
        "body": "multipart",
        "length": "correct",
        "payload": b"\x89PNG data",
        "chunk": 1,
        "disconnect": False,
    }
    return Upload(**(fields | changes))


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
async def test_part_headers_split_across_chunks(tmp_path: Path, chunk: int) -> None:
    """A part header arriving in pieces is read whole: the upload works, the type is checked."""
    status, disk, attachment_id = await _one_upload(tmp_path / "ok", _valid_upload(), chunk)
    assert status == 200
    assert await disk.read(attachment_id, {"user_id": "alice"}) == b"\x89PNG data"
    refused = _valid_upload(part_type="text/html")
    status, disk, _ = await _one_upload(tmp_path / "html", refused, chunk)
    assert status == 415 and _files_under(disk.root) == []


@pytest.mark.parametrize("body", ["two file fields", "no closing boundary"])
async def test_malformed_multipart_is_refused(tmp_path: Path, body: str) -> None:
    """Two ``file`` fields, or a body cut before its closing boundary: 400, nothing stored."""
    status, disk, attachment_id = await _one_upload(tmp_path, _valid_upload(body=body), 1 << 20)
    assert status == 400 and _files_under(disk.root) == []
    pending = await disk.store.load_attachment(attachment_id, {"user_id": "alice"})
    assert pending.upload_descriptor is not None


# the catalogue: one hostile part at a time, with its exact answer

CATALOGUE: list[tuple[str, Any, int, str]] = [
    ("signature", "tampered signature", 403, "bad signature"),
    ("signature", "forged tenant", 403, "bad signature"),
    ("signature", "another attachment", 403, "bad signature"),
    ("signature", "signed for another method", 403, "bad signature"),
    ("signature", "download URL", 403, "bad signature"),
    ("signature", "duplicated parameters", 403, "bad signature"),
    ("signature", "garbage tenant", 403, "bad signature"),
    ("signature", "missing signature", 403, "missing or malformed signature"),
    ("signature", "missing tenant", 403, "missing or malformed signature"),
    ("signature", "missing expiry", 403, "missing or malformed signature"),
    ("signature", "no query", 403, "missing or malformed signature"),
    ("signature", "garbage expiry", 403, "missing or malformed signature"),
    ("signature", "huge expiry", 403, "missing or malformed signature"),
    ("signature", "expired", 403, "expired URL"),
    ("signature", "non-ASCII signature", 403, "bad signature"),
    ("signature", "non-ASCII tenant", 403, "missing or malformed signature"),
    ("method", "other", 403, "this URL accepts POST only"),
    ("method", "GET", 405, ""),
    ("method", "DELETE", 405, ""),
    ("method", "PATCH", 405, ""),
    ("path", "traversal", 404, ""),
    ("path", "extra segment", 404, ""),
    ("path", "empty", 404, ""),
    ("path", "upper case", 403, "bad signature"),
    ("path", "NUL", 403, "bad signature"),
    ("path", "long", 403, "bad signature"),
    ("content_type", "multipart without boundary", 415, "send multipart/form-data"),
    ("content_type", "text/html", 415, "send multipart/form-data"),
    ("content_type", "none", 415, "send multipart/form-data"),
    ("content_type", "multipart with a long boundary", 400, "Boundary length"),
    ("part_type", "text/html", 415, "files of type text/html are not accepted"),
    ("part_type", "image/svg+xml", 415, "files of type image/svg+xml are not accepted"),
    ("part_type", "x", 415, "not a MIME type"),
    ("body", "no file field", 415, "no 'file' field"),
    ("body", "field named File", 415, "no 'file' field"),
    ("body", "empty", 415, "no 'file' field"),
    ("body", "two file fields", 400, "more than one 'file' field"),
    ("body", "no closing boundary", 400, "ended before its closing boundary"),
    ("body", "garbage", 400, ""),
    ("body", "padded with another field", 413, "larger than the limit"),
    ("length", "huge", 413, "larger than the limit"),
    ("length", "garbage", 400, "Content-Length is not a number"),
    ("length", "float", 400, "Content-Length is not a number"),
    ("payload", b"q" * 4097, 413, "larger than the limit"),
    ("disconnect", True, 400, "the client went away"),
    ("length", "smaller", 200, ""),
    ("length", "larger", 200, ""),
    ("length", "negative", 200, ""),
    ("length", "missing", 200, ""),
    ("part_type", None, 200, ""),
    ("part_type", "IMAGE/PNG", 200, ""),
    ("file_name", "../../etc/passwd", 200, ""),
    ("file_name", "a\x00b.png", 200, ""),
    ("path", "encoded", 200, ""),
    ("signature", "other tenant's valid URL", 200, ""),
]


@pytest.mark.parametrize(
    ("part", "value", "status", "message"),
    CATALOGUE,
    ids=[f"{part}={value!r:.20}" for part, value, _, _ in CATALOGUE],
)
async def test_each_hostile_part(
    tmp_path: Path, part: str, value: Any, status: int, message: str
) -> None:
    """A valid upload with one part made hostile gets exactly this answer (docs/security.md)."""
    disk = _disk(tmp_path, max_bytes=4096, allowed_mime_types={"image/png", "text/plain"})
    attachment_id = f"atc_{uuid.uuid4().hex}"
    disk.generate_attachment_id = lambda _m, _c: attachment_id  # type: ignore[method-assign]
    for tenant in ("alice", "mallory"):
        params = AttachmentCreateParams(name="cat.png", size=10, mime_type="image/png")
        created = await disk.create_attachment(params, {"user_id": tenant})
        await disk.store.save_attachment(created, {"user_id": tenant})
    upload = dataclasses.replace(_valid_upload(chunk=1 << 20), **{part: value})
    method = {"own": "POST", "other": "PUT"}.get(upload.method, upload.method)
    body = _body(upload, "b0undary")
    got, answer = await asgi_request(
        disk.asgi_app(),
        method,
        _path(upload.path, attachment_id),
        _query(disk, upload.signature, "POST", attachment_id),
        _headers(upload, body, "b0undary"),
        [body],
        upload.disconnect,
    )
    assert got == status, answer
    assert message.encode() in answer
    owner = "mallory" if upload.signature == "other tenant's valid URL" else "alice"
    loaded = await disk.store.load_attachment(attachment_id, {"user_id": owner})
    if status == 200:
        assert await disk.read(attachment_id, {"user_id": owner}) == upload.payload
        assert loaded.name == "cat.png", "the name is the one given at create, not the part's"
    else:
        assert _files_under(disk.root) == [] and loaded.upload_descriptor is not None


async def test_a_second_upload_is_refused(tmp_path: Path) -> None:
    """A valid URL used again after the upload arrived: 409, the stored bytes unchanged."""
    status, disk, attachment_id = await _one_upload(tmp_path, _valid_upload(), 1 << 20)
    assert status == 200
    again = _valid_upload(payload=b"replaced")
    body = _body(again, "b0undary")
    status, answer = await asgi_request(
        disk.asgi_app(),
        "POST",
        f"/upload/{attachment_id}",
        _query(disk, "valid", "POST", attachment_id),
        _headers(again, body, "b0undary"),
        [body],
        disconnect=False,
    )
    assert status == 409, answer
    assert await disk.read(attachment_id, {"user_id": "alice"}) == b"\x89PNG data"


async def test_names_types_and_sizes_are_cleaned_or_refused(tmp_path: Path) -> None:
    """Shown names lose paths and invisible characters; types normalize; bad sizes are 413."""
    disk = _disk(tmp_path, max_bytes=100, allowed_mime_types={"text/plain", "image/svg+xml"})
    context = {"user_id": "alice"}
    names = {
        "../../etc/passwd": "passwd",
        "C:\\x\\y.txt": "y.txt",
        "a\x00b\u202ec\ud800.txt": "abc.txt",
        "": "file",
        "\x01\x02": "file",
        "n" * 300: "n" * 255,
    }
    for name, shown in names.items():
        params = AttachmentCreateParams(name=name, size=1, mime_type="TEXT/Plain; charset=utf-8")
        created = await disk.create_attachment(params, context)
        assert created.name == shown and created.mime_type == "text/plain"
    for size in (-1, 101):
        with pytest.raises(UploadRejected) as refused:
            params = AttachmentCreateParams(name="a.txt", size=size, mime_type="text/plain")
            await disk.create_attachment(params, context)
        assert refused.value.status == 413


async def test_svg_is_never_inline(tmp_path: Path) -> None:
    """An allowed SVG is served as a download: no inline preview, sandboxed, not sniffed."""
    disk = _disk(tmp_path, allowed_mime_types={"image/svg+xml"})
    context = {"user_id": "alice"}
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    attachment = await disk.upload(svg, name="x.svg", mime_type="image/svg+xml", context=context)
    assert not isinstance(attachment, ImageAttachment), "no preview URL for SVG"
    app = Starlette(routes=[Mount("/files", disk.asgi_app())])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        response = await http.get(disk.download_url(attachment.id, context))
    assert response.status_code == 200 and response.content == svg
    headers = response.headers
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert "access-control-allow-origin" not in headers
