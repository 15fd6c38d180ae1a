"""Tenant erasure (``operations.erase``, ``chatkit-stores erase-tenant``) on every backend.

Each test seeds the tenant to erase and its look-alikes (same name but for case or a trailing
space, and an unrelated one) with threads, items, attachments sent in a message, an orphaned
upload, a two-phase upload whose bytes never came, bytes whose record was lost and (SQL) an
item under a thread that was never saved. After the erasure nothing of the tenant is left,
rows or bytes, and everything of the others is exactly as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatkit_stores import DiskAttachmentStore, MemoryStore, S3AttachmentStore, SQLStore
from chatkit_stores.audit import AuditEvent
from chatkit_stores.base import StoreBase
from chatkit_stores.blobs import Encrypted
from chatkit_stores.cli import main
from chatkit_stores.encryption import KeyRing, new_key
from chatkit_stores.files import AttachmentStoreBase
from chatkit_stores.files import s3 as s3_module
from chatkit_stores.operations import OperationError
from chatkit_stores.operations.erase import MAX_PASSES, TENANT_ERASE, Counts, erase_tenant
from chatkit_stores.testing import models
from chatkit_stores.testing.interleave import instrument, interleavings
from conftest import bucket_keys, drop_tables, s3_credentials

SECRET = "erase-secret-" + "e" * 32
DOCS = Path(__file__).resolve().parent.parent / "docs" / "encryption.md"
TENANT = "acme"
OTHERS = ("ACME", "acme ", "globex")
S3_PART = s3_module.MIN_PART_SIZE
WORLDS = [
    ("memory", "disk"),
    ("encrypted memory", "s3"),
    ("sqlite", "disk"),
    ("postgres", "disk"),
    ("mysql", "disk"),
    ("sqlite", "s3"),
    ("mysql", "s3"),
]


@dataclass
class World:
    """A metadata store, the attachment store linked to it, and how to build a second one on
    the same bytes (linked to nothing: its uploads leave bytes without a record)."""

    store: StoreBase[Any]
    files: AttachmentStoreBase[Any]
    unlinked: AttachmentStoreBase[Any]


@pytest.fixture(params=WORLDS, ids=[f"{m}+{f}" for m, f in WORLDS])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    metadata, kind = request.param
    store: StoreBase[Any]
    if metadata == "memory":
        store = MemoryStore()
    elif metadata == "encrypted memory":
        store = MemoryStore(encryption=KeyRing({"k1": new_key()}))
    elif metadata == "sqlite":
        store = SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}")
    else:
        url = request.getfixturevalue(f"{metadata}_url")
        store = SQLStore.from_url(url, table_prefix=f"er{uuid.uuid4().hex[:8]}_")
        await store.create_schema()
    if kind == "disk":
        root = tmp_path / "files"
        files: AttachmentStoreBase[Any] = DiskAttachmentStore(
            store, root, base_url="http://files.test", secret=SECRET
        )
        unlinked: AttachmentStoreBase[Any] = DiskAttachmentStore(
            MemoryStore(), root, base_url="http://files.test", secret=SECRET
        )
    else:
        client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("bucket")
        prefix = f"erase-{uuid.uuid4().hex[:8]}/"
        files = S3AttachmentStore(store, bucket, prefix=prefix, client=client)
        unlinked = S3AttachmentStore(MemoryStore(), bucket, prefix=prefix, client=client)
    yield World(store, files, unlinked)
    if isinstance(store, SQLStore):
        if metadata != "sqlite":
            await drop_tables(store.engine, store.table_prefix)
        await store.close()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLStore[Any]]:
    """A SQL store of each backend, in tables of its own (dropped after)."""
    if request.param == "sqlite":
        store = SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}")
    else:
        prefix = f"er{uuid.uuid4().hex[:8]}_"
        url = request.getfixturevalue(f"{request.param}_url")
        store = SQLStore.from_url(url, table_prefix=prefix)
        await store.create_schema()
    yield store
    if request.param != "sqlite":
        await drop_tables(store.engine, store.table_prefix)
    await store.close()


@dataclass
class Seeded:
    """The ids seeded for one tenant and what an erasure of it must count."""

    threads: list[str]
    attachments: list[str]
    expected: Counts


async def seed(world: World, tenant: str) -> Seeded:
    """Two threads with items, attachments in every state, bytes without a record."""
    store, files, ctx = world.store, world.files, {"tenant_id": tenant}
    threads = [models.thread(title=tenant) for _ in range(2)]
    items = 0
    for thread in threads:
        await store.save_thread(thread, ctx)
        for build in (models.user_message, models.assistant_message, models.end_of_turn):
            await store.add_thread_item(thread.id, build(thread.id), ctx)
            items += 1
    sent = [
        await files.upload(
            f"{tenant} {n}".encode(),
            name="notes.txt",
            mime_type="text/plain",
            context=ctx,
            thread_id=threads[0].id,
        )
        for n in range(2)
    ]
    orphan = await files.upload(b"orphan", name="o.txt", mime_type="text/plain", context=ctx)
    params = AttachmentCreateParams(name="later.png", size=10, mime_type="image/png")
    pending = await files.create_attachment(params, ctx)  # the bytes never come
    await store.save_attachment(pending, ctx)
    await world.unlinked.upload(b"lost", name="lost.txt", mime_type="text/plain", context=ctx)
    if isinstance(store, SQLStore):  # an item under a thread id that was never saved
        await store.add_thread_item("thr_never_saved", models.user_message("thr_never_saved"), ctx)
        items += 1
    attachments = [a.id for a in (*sent, orphan, pending)]
    expected = Counts(threads=2, items=items, attachments=4, files=4)
    return Seeded([t.id for t in threads], attachments, expected)


async def observe(world: World, tenant: str, seeded: Seeded) -> dict[str, Any]:
    """Everything the tenant's requests can see: threads, items, attachments and their bytes."""
    store, ctx = world.store, {"tenant_id": tenant}
    seen: dict[str, Any] = {}
    page = await store.load_threads(100, None, "asc", ctx)
    seen["threads"] = [t.model_dump(mode="json") for t in page.data]
    for thread_id in [*seeded.threads, "thr_never_saved"]:
        items = await store.load_thread_items(thread_id, None, 100, "asc", ctx)
        seen[f"items of {thread_id}"] = [i.model_dump(mode="json") for i in items.data]
    for attachment_id in seeded.attachments:
        try:
            loaded = await store.load_attachment(attachment_id, ctx)
            seen[attachment_id] = loaded.model_dump(mode="json", exclude={"preview_url"})
        except NotFoundError:
            seen[attachment_id] = None
        try:
            seen[f"bytes of {attachment_id}"] = await world.files.read(attachment_id, ctx)
        except NotFoundError:
            seen[f"bytes of {attachment_id}"] = None
    seen["files"] = await world.files.tenant_files(tenant)  # type: ignore[attr-defined]
    return seen


async def rows_of(store: StoreBase[Any], tenant: str) -> dict[str, int]:
    """The tenant's rows in each table, counted in SQL (nothing for a memory store)."""
    if not isinstance(store, SQLStore):
        return {}
    counts = {}
    async with store.engine.connect() as conn:
        for name in ("threads", "items", "attachments"):
            table = getattr(store.tables, name)
            query = select(func.count()).select_from(table).where(table.c.tenant == tenant)
            counts[name] = (await conn.execute(query)).scalar_one()
    return counts


def counts(report: Counts) -> Counts:
    return Counts(report.threads, report.items, report.attachments, report.files)


async def test_erase_leaves_nothing_of_the_tenant_and_all_of_the_others(world: World) -> None:
    seeded = {tenant: await seed(world, tenant) for tenant in (TENANT, *OTHERS)}
    before = {t: await observe(world, t, seeded[t]) for t in seeded}
    assert len(before[TENANT]["files"]) == 4 and before[TENANT]["threads"]

    dry = await erase_tenant(world.store, TENANT, files=world.files, dry_run=True)
    assert counts(dry) == seeded[TENANT].expected
    assert "would erase tenant 'acme': 2 threads" in dry.summary(dry_run=True)
    assert await observe(world, TENANT, seeded[TENANT]) == before[TENANT], "a dry run deletes"

    report = await erase_tenant(world.store, TENANT, files=world.files, batch_size=2)
    assert counts(report) == counts(dry), "a real run removes what the dry run counted"
    assert report.passes == 2  # the second pass found nothing

    gone = await observe(world, TENANT, seeded[TENANT])
    assert not gone["threads"] and not gone["files"]
    assert not any(v for k, v in gone.items() if k.startswith("items of")), gone
    assert all(
        gone[a] is None and gone[f"bytes of {a}"] is None for a in seeded[TENANT].attachments
    )
    assert set((await rows_of(world.store, TENANT)).values()) <= {0}
    if isinstance(world.store.blobs, Encrypted):  # nor its texts in the key ring's cache
        tenants = {row[2] for row in world.store.blobs.keys._known}
        assert TENANT not in tenants and set(OTHERS) <= tenants
    if isinstance(world.files, DiskAttachmentStore):
        assert not world.files.path(TENANT, "x").parent.exists(), "the tenant's folder is left"
    again = await erase_tenant(world.store, TENANT, files=world.files, dry_run=True)
    assert again.total == 0
    for other in OTHERS:
        assert await observe(world, other, seeded[other]) == before[other], other
        assert counts(await erase_tenant(world.store, other, files=world.files, dry_run=True)) == (
            seeded[other].expected
        )


async def test_erase_is_audited_with_ids_never_content(tmp_path: Path) -> None:
    events: list[AuditEvent] = []
    async with SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}", audit=events.append) as s:
        files = DiskAttachmentStore(s, tmp_path / "f", base_url="http://f", secret=SECRET)
        world = World(s, files, DiskAttachmentStore(MemoryStore(), tmp_path / "f", **_disk()))
        seeded = await seed(world, TENANT)
        await seed(world, "globex")
        events.clear()
        await erase_tenant(s, TENANT, files=files, batch_size=3)
    assert {e.tenant for e in events} == {TENANT}
    assert events[-1].action == TENANT_ERASE and events[-1].outcome == "ok"
    by_action: dict[str, list[str | None]] = {}
    for event in events[:-1]:
        assert event.via == TENANT_ERASE and event.outcome == "ok", event
        by_action.setdefault(event.action, []).append(event.thread_id or event.attachment_id)
    assert sorted(by_action["thread.delete"]) == sorted(seeded.threads)
    assert sorted(by_action["attachment.delete"]) == sorted(seeded.attachments)
    assert sorted(by_action["attachment.bytes.delete"]) == sorted(seeded.attachments)


def _disk() -> dict[str, Any]:
    return {"base_url": "http://f", "secret": SECRET}


class Interrupted(Exception):
    """Stands for a crash, a Ctrl-C or a lost connection in the middle of an erasure."""


class CrashingDisk(DiskAttachmentStore[Any]):
    """A disk store whose first ``delete_bytes`` crashes before deleting anything: the records
    of that batch are gone, their bytes are not."""

    crashed = False

    async def delete_bytes(self, tenant: str, attachment_ids: Any) -> None:
        if not self.crashed:
            self.crashed = True
            raise Interrupted("after the records, before the bytes")
        await super().delete_bytes(tenant, attachment_ids)


async def test_an_interrupted_erasure_is_finished_by_running_it_again(
    sql_store: SQLStore[Any], tmp_path: Path
) -> None:
    store = sql_store
    events: list[AuditEvent] = []
    store.audit = events.append
    files = CrashingDisk(store, tmp_path / "f", **_disk())
    world = World(store, files, DiskAttachmentStore(MemoryStore(), tmp_path / "f", **_disk()))
    seeded = await seed(world, TENANT)
    other = await seed(world, "globex")
    other_before = await observe(world, "globex", other)

    # 1. Interrupted between an attachment batch's records and its bytes.
    with pytest.raises(Interrupted):
        await erase_tenant(store, TENANT, files=files, batch_size=1)
    assert events[-1].action == TENANT_ERASE and events[-1].outcome == "error"
    left = await erase_tenant(store, TENANT, files=files, dry_run=True)
    assert left.attachments == 3 and left.files == 4, "one record gone, its bytes not"

    # 2. Interrupted after the second batch of items.
    def crash(kind: str, count: int) -> None:
        if kind == "items":
            batches.append(count)
            if len(batches) == 2:
                raise Interrupted("after two batches of items")

    batches: list[int] = []
    with pytest.raises(Interrupted):
        await erase_tenant(store, TENANT, files=files, batch_size=1, on_batch=crash)
    left = await erase_tenant(store, TENANT, files=files, dry_run=True)
    assert left.attachments == 0 and left.threads == 2
    assert left.items == seeded.expected.items - 2

    # 3. Run again: finished, the bytes of the first run's records too.
    report = await erase_tenant(store, TENANT, files=files, batch_size=2)
    assert (report.threads, report.items, report.attachments) == (2, left.items, 0)
    assert report.files == 2, "the bytes whose record run 1 deleted, and the lost ones"
    assert (await erase_tenant(store, TENANT, files=files, dry_run=True)).total == 0
    assert set((await rows_of(store, TENANT)).values()) == {0}
    assert await observe(world, "globex", other) == other_before


async def test_a_write_overlapping_the_erasure_is_erased_too(
    sql_store: SQLStore[Any], tmp_path: Path
) -> None:
    """The erasure paused at each of its statements while the tenant adds an item and a thread:
    whatever the request wrote is gone when the erasure returns (it ends with an empty pass)."""
    store = sql_store
    files = DiskAttachmentStore(store, tmp_path / "f", **_disk())
    other = {"tenant_id": "globex"}
    kept = models.thread()
    await store.save_thread(kept, other)
    passes: list[int] = []

    async def setup() -> tuple[dict[str, str], str]:
        ctx = {"tenant_id": f"{TENANT}-{uuid.uuid4().hex[:8]}"}
        thread = models.thread()
        await store.save_thread(thread, ctx)
        await store.add_thread_item(thread.id, models.user_message(thread.id), ctx)
        return ctx, thread.id

    async def erase(state: tuple[dict[str, str], str]) -> Counts:
        return await erase_tenant(store, state[0]["tenant_id"], files=files)

    async def write(state: tuple[dict[str, str], str]) -> None:
        ctx, thread_id = state
        await store.add_thread_item(thread_id, models.assistant_message(thread_id), ctx)
        await store.save_thread(models.thread(), ctx)
        await files.upload(b"late", name="late.txt", mime_type="text/plain", context=ctx)

    with instrument(AsyncConnection, "execute"):
        async for (ctx, _), run in interleavings(setup, erase, write):
            report, _ = run.results()
            passes.append(report.passes)
            left = await erase_tenant(store, ctx["tenant_id"], files=files, dry_run=True)
            assert left.total == 0, f"paused at {run.at}: left {left}"
    assert passes[0] == 2, "paused before its first statement: one pass takes all"
    assert max(passes) >= 3, "no write landed after the first pass had gone by it"
    assert max(passes) <= MAX_PASSES
    assert (await store.load_thread(kept.id, other)).id == kept.id


async def test_a_tenant_written_to_without_end_stops_the_erasure(tmp_path: Path) -> None:
    """Every batch of threads deleted is followed by a new thread of the tenant: no pass ever
    finds nothing, and the erasure stops after MAX_PASSES with one line saying what to do."""
    async with SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}") as store:
        ctx = {"tenant_id": TENANT}
        await store.save_thread(models.thread(), ctx)

        async def write_again(kind: str, count: int) -> None:
            if kind == "threads":
                await store.save_thread(models.thread(), ctx)

        with pytest.raises(OperationError, match=f"still being written to after {MAX_PASSES} "):
            await erase_tenant(store, TENANT, on_batch=write_again)
        assert (await erase_tenant(store, TENANT, dry_run=True)).threads == 1


def test_erase_tenant_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'chat.db'}"
    upload_dir = tmp_path / "files"

    async def setup() -> None:
        async with SQLStore.from_url(url) as store:
            files = DiskAttachmentStore(store, upload_dir, **_disk())
            unlinked = DiskAttachmentStore(MemoryStore(), upload_dir, **_disk())
            world = World(store, files, unlinked)
            await seed(world, TENANT)
            await seed(world, "globex")

    asyncio.run(setup())
    erase = ["erase-tenant", url, TENANT, "--upload-dir", str(upload_dir)]
    assert main([*erase, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "would erase tenant 'acme': 2 threads, 7 items, 4 attachments and 4 attachment files "
        "(dry run: nothing deleted)\n"
    )
    assert main([*erase, "-q"]) == 0
    assert capsys.readouterr().out == (
        "erased tenant 'acme': 2 threads, 7 items, 4 attachments and 4 attachment files "
        "in 2 passes\n"
    )
    assert main([*erase, "-q"]) == 0
    assert "nothing is stored for tenant 'acme'" in capsys.readouterr().out
    assert main(["erase-tenant", url, "globex", "--metadata-only", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith(
        "would erase tenant 'globex': 2 threads, 7 items and 4 attachments (dry run"
    )


@pytest.mark.parametrize(
    ("argv", "status", "says"),
    [
        (
            ["erase-tenant", "URL", "acme"],
            2,
            "give --upload-dir or --s3-bucket, or --metadata-only",
        ),
        (
            ["erase-tenant", "URL", "acme", "--metadata-only", "--upload-dir", "f"],
            2,
            "--metadata-only erases no attachment files",
        ),
        (["erase-tenant", "URL", "", "--metadata-only"], 2, "The tenant from TENANT must be"),
        (["erase-tenant", "URL"], 2, "give a database URL or set DATABASE_URL"),
        (["erase-tenant", "URL", "--metadata-only", "DATABASE_URL"], 2, "looks like a database"),
        (["erase-tenant"], 2, "the following arguments are required: TENANT"),
        (["erase-tenant", "URL", "acme", "--metadata-only", "--batch-size", "0"], 2, "positive"),
        (["erase-tenant", "sqlite:///missing.db", "acme", "--metadata-only"], 1, "no SQLite"),
        (
            ["erase-tenant", "URL", "acme", "--metadata-only", "--table-prefix", "nope_"],
            1,
            "no chatkit-stores tables with prefix 'nope_'",
        ),
    ],
)
def test_erase_tenant_mistakes_are_one_line(
    argv: list[str],
    status: int,
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'chat.db'}"

    async def setup() -> None:
        async with SQLStore.from_url(url) as store:
            await store.save_thread(models.thread(), {"tenant_id": "acme"})

    asyncio.run(setup())
    if argv[-1] == "DATABASE_URL":
        monkeypatch.setenv("DATABASE_URL", url)
        argv = argv[:-1]
    argv = [url if arg == "URL" else arg for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = int(exit.code or 0)
    assert code == status
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err, err
    assert not (tmp_path / "missing.db").exists()


async def test_the_documented_example_runs(tmp_path: Path) -> None:
    """The python fence of docs/encryption.md's erasure section, on a seeded store."""
    text = DOCS.read_text()
    section = text[text.index("## Erasing a tenant") :]
    body = section.split("```python\n", 1)[1].split("```", 1)[0]
    source = "async def example(store, attachment_store):\n"
    source += "".join(f"    {line}\n" for line in body.splitlines()) + "    return counts, report\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    async with SQLStore.from_url(f"sqlite:///{tmp_path / 'chat.db'}") as store:
        files = DiskAttachmentStore(store, tmp_path / "f", **_disk())
        world = World(store, files, DiskAttachmentStore(MemoryStore(), tmp_path / "f", **_disk()))
        seeded = await seed(world, TENANT)
        dry, report = await namespace["example"](store, files)
    assert counts(dry) == counts(report) == seeded.expected


# --- S3: every in-flight multipart upload of the tenant is aborted ------------------------------


def _s3_files(s3_client: Any, bucket: str, **options: Any) -> S3AttachmentStore[Any]:
    prefix = f"erase-{uuid.uuid4().hex[:8]}/"
    return S3AttachmentStore(MemoryStore(), bucket, prefix=prefix, client=s3_client, **options)


def _in_flight(s3_client: Any, bucket: str, folder: str) -> list[dict[str, Any]]:
    """The uploads under ``folder`` neither completed nor aborted (every page)."""
    pages = s3_client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=folder)
    return [upload for page in pages for upload in page.get("Uploads", [])]


class PagedUploads:
    """``ListMultipartUploads`` answered in pages of at most ``size`` uploads, as S3 answers in
    pages of at most 1,000 (keys in order, ``IsTruncated``, ``NextKeyMarker`` and
    ``NextUploadIdMarker``; the markers honoured): moto answers every upload at once whatever
    ``MaxUploads`` asks, so without this a test could not tell one call from every page. Put on
    a client of the test's own; the uploads listed are the server's, only the page is cut."""

    def __init__(self, client: Any, size: int) -> None:
        self.size = size
        self.calls = 0
        client.meta.events.register("provide-client-params.s3.ListMultipartUploads", self.ask)
        client.meta.events.register("after-call.s3.ListMultipartUploads", self.page)

    def ask(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["paged_uploads"] = dict(params)

    def page(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        asked = context["paged_uploads"]
        uploads = sorted(parsed.get("Uploads", []), key=lambda u: (u["Key"], u["UploadId"]))
        key, upload_id = asked.get("KeyMarker"), asked.get("UploadIdMarker")
        if key and upload_id:
            uploads = [u for u in uploads if (u["Key"], u["UploadId"]) > (key, upload_id)]
        elif key:
            uploads = [u for u in uploads if u["Key"] > key]
        limit = min(asked.get("MaxUploads", 1000), self.size)
        parsed["Uploads"], parsed["IsTruncated"] = uploads[:limit], len(uploads) > limit
        if parsed["IsTruncated"]:
            parsed["NextKeyMarker"] = uploads[limit - 1]["Key"]
            parsed["NextUploadIdMarker"] = uploads[limit - 1]["UploadId"]
        self.calls += 1


async def test_erasure_aborts_every_in_flight_upload_of_the_tenant_page_after_page(
    s3_endpoint: str, bucket: str
) -> None:
    """More uploads in flight than one page lists: all of the tenant's go, no one else's."""
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4")
    client = boto3.client("s3", endpoint_url=s3_endpoint, config=config, **s3_credentials())
    paged = PagedUploads(client, size=3)
    files = _s3_files(client, bucket)
    folders = {tenant: files.tenant_prefix(tenant) for tenant in (TENANT, *OTHERS)}
    for folder in folders.values():
        for n in range(4):  # two uploads of one key: the upload id marker matters
            client.create_multipart_upload(Bucket=bucket, Key=f"{folder}a_{n // 2:064x}")
    first = client.list_multipart_uploads(Bucket=bucket, Prefix=folders[TENANT])
    assert first["IsTruncated"] and len(first["Uploads"]) == 3, "the server lists one page"
    paged.calls = 0

    await erase_tenant(files.store, TENANT, files=files)

    assert paged.calls >= 2, "the erasure listed one page"
    assert _in_flight(client, bucket, folders[TENANT]) == []
    for other in OTHERS:
        assert len(_in_flight(client, bucket, folders[other])) == 4, other


def _no_such_upload(error: ClientError) -> bool:
    """Whether S3 refused a call for naming an upload that is no more: ``NoSuchUpload``, or
    from moto, which fails on the missing upload, a 500."""
    return error.response["Error"]["Code"] in {"NoSuchUpload", "500"}


class PausedUpload:
    """Chunks for ``upload()``: one full part, then a pause until ``resume`` is set, then the end.

    When ``paused`` is set the store has uploaded the first part of its multipart upload (it
    asks for the next chunk only after the part is stored) and not completed it.
    """

    def __init__(self, part: bytes) -> None:
        self.part = part
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.part
        self.paused.set()
        await self.resume.wait()


async def test_an_upload_in_flight_is_aborted_and_never_becomes_an_object(
    s3_client: Any, bucket: str
) -> None:
    files = _s3_files(s3_client, bucket, max_bytes=2 * S3_PART, allowed_mime_types={"text/plain"})
    part = {tenant: tenant.encode() * (S3_PART // len(tenant)) for tenant in (TENANT, "globex")}
    part = {tenant: body + b"." * (S3_PART - len(body)) for tenant, body in part.items()}
    uploads = {tenant: PausedUpload(body) for tenant, body in part.items()}
    tasks = {
        tenant: asyncio.create_task(
            files.upload(
                upload.chunks(),
                name="big.txt",
                mime_type="text/plain",
                context={"tenant_id": tenant},
            )
        )
        for tenant, upload in uploads.items()
    }
    for upload in uploads.values():
        await upload.paused.wait()
    folders = {tenant: files.tenant_prefix(tenant) for tenant in uploads}
    started = {tenant: _in_flight(s3_client, bucket, folder) for tenant, folder in folders.items()}
    assert [len(started[tenant]) for tenant in uploads] == [1, 1], started
    acme = started[TENANT][0]
    parts = s3_client.list_parts(Bucket=bucket, Key=acme["Key"], UploadId=acme["UploadId"])
    assert len(parts["Parts"]) == 1, "a part of the tenant's upload is stored"

    report = await erase_tenant(files.store, TENANT, files=files)

    assert _in_flight(s3_client, bucket, folders[TENANT]) == []
    assert _in_flight(s3_client, bucket, folders["globex"]) == started["globex"]
    for upload in uploads.values():
        upload.resume.set()
    with pytest.raises(ClientError) as store_completion:  # the store's completion fails
        await tasks[TENANT]
    with pytest.raises(ClientError) as completion:  # and so does anyone's
        s3_client.complete_multipart_upload(
            Bucket=bucket,
            Key=acme["Key"],
            UploadId=acme["UploadId"],
            MultipartUpload={"Parts": [{"ETag": parts["Parts"][0]["ETag"], "PartNumber": 1}]},
        )
    for refused in (store_completion.value, completion.value):
        assert _no_such_upload(refused), refused
    assert await files.tenant_files(TENANT) == []
    assert bucket_keys(s3_client, bucket, folders[TENANT]) == []
    assert report.total == 0 and report.passes == 1
    other = await tasks["globex"]  # another tenant's upload in flight completes untouched
    assert await files.read(other.id, {"tenant_id": "globex"}) == part["globex"]
