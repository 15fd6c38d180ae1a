"""doctor, copy/export/import and prune, through the command line, on every SQL backend."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from chatkit.store import NotFoundError
from sqlalchemy import text

from chatkit_stores import DiskAttachmentStore, SQLStore
from chatkit_stores.cli import main
from chatkit_stores.migrations import downgrade
from chatkit_stores.operations.database import TABLES, Database
from chatkit_stores.testing import models
from doc_sessions import run_sessions
from test_migrations import own_database

BACKENDS = ["sqlite", "postgres", "mysql"]
SECRET = "s" * 32
T0 = models.T0


@dataclass
class Target:
    """A database URL and a table prefix of this test's own."""

    url: str
    prefix: str

    def store(self) -> SQLStore[Any]:
        return SQLStore.from_url(self.url, table_prefix=self.prefix)

    def args(self) -> list[str]:
        return [self.url, "--table-prefix", self.prefix]


@pytest.fixture
def make_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], Target]]:
    """Targets on SQLite (a new file), PostgreSQL or MariaDB; server tables dropped after."""
    made: list[Target] = []

    def make(backend: str) -> Target:
        prefix = f"ops{uuid.uuid4().hex[:8]}_"
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'{prefix}.db'}"
        else:
            url = request.getfixturevalue(f"{backend}_url")
        target = Target(url, prefix)
        made.append(target)
        return target

    yield make
    for target in made:
        if not target.url.startswith("sqlite"):
            asyncio.run(downgrade(target.url, "base", prefix=target.prefix))


@dataclass
class Seeded:
    """What ``seed`` stored."""

    tenants: list[str]
    attachments: dict[str, list[str]] = field(default_factory=dict)
    thread_ids: dict[str, list[str]] = field(default_factory=dict)
    item_ids: list[tuple[str, str, str]] = field(default_factory=list)


ITEMS = 2 * 2 * (len(models.ITEM_BUILDERS) + 1)
"""Items the seed writes: two tenants, two threads each, every item type plus one more."""


async def seed(target: Target) -> Seeded:
    """Two tenants; threads and items with equal created_at (ties), every item type, ids that
    differ only in case, an orphaned and an attached attachment."""
    seeded = Seeded(tenants=["alice", "bob"])
    async with target.store() as store:
        await store.create_schema()
        for tenant in seeded.tenants:
            ctx = {"user_id": tenant}
            ids = ["Case", "case", models.new_id("thr"), models.new_id("thr")]
            seeded.thread_ids[tenant] = ids
            # Saved newest first; the first two share created_at (their order is seq).
            for n, thread_id in enumerate(reversed(ids)):
                created = T0 if n >= 2 else T0 + timedelta(minutes=n + 1)
                await store.save_thread(models.thread(thread_id, created, f"{tenant} {n}"), ctx)
            for thread_id in ids[:2]:
                for n, build in enumerate(models.ITEM_BUILDERS.values()):
                    # Three groups of equal timestamps, inserted out of order.
                    item = build(thread_id, T0 + timedelta(seconds=(n * 7) % 3))
                    await store.add_thread_item(thread_id, item, ctx)
                    seeded.item_ids.append((tenant, thread_id, item.id))
                nasty = models.assistant_message(thread_id, T0, models.NASTY_TEXT)
                await store.add_thread_item(thread_id, nasty, ctx)
            attached = models.file_attachment(thread_id=ids[0])
            orphan = models.image_attachment()
            await store.save_attachment(attached, ctx)
            await store.save_attachment(orphan, ctx)
            seeded.attachments[tenant] = [attached.id, orphan.id]
    return seeded


async def snapshot(target: Target, seeded: Seeded) -> dict[str, Any]:
    """Everything a ChatKit server can read, through the store API, pages of 2 and of 1000."""
    result: dict[str, Any] = {}
    async with target.store() as store:
        for tenant in seeded.tenants:
            ctx = {"user_id": tenant}
            threads = await _walk(lambda after, c=ctx: store.load_threads(2, after, "asc", c))
            desc = await store.load_threads(1000, None, "desc", ctx)
            assert [t.id for t in desc.data] == [t["id"] for t in reversed(threads)]
            items = {
                thread["id"]: await _walk(
                    lambda after, tid=thread["id"], c=ctx: store.load_thread_items(
                        tid, after, 2, "asc", c
                    )
                )
                for thread in threads
            }
            attachments = [
                (await store.load_attachment(a, ctx)).model_dump(mode="json")
                for a in seeded.attachments[tenant]
            ]
            result[tenant] = {"threads": threads, "items": items, "attachments": attachments}
    return result


async def _walk(load: Callable[[str | None], Any]) -> list[dict[str, Any]]:
    """Every page from the first, following ``after``."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = await load(after)
        out += [obj.model_dump(mode="json") for obj in page.data]
        if not page.has_more:
            return out
        after = page.after


async def raw_rows(target: Target) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in seq order, without seq."""
    db = Database.open(target.url, target.prefix)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            out[table] = [
                tuple(row.values()) async for batch in db.batches(table, 7) for row in batch
            ]
        return out
    finally:
        await db.close()


# doctor


@pytest.mark.parametrize("backend", BACKENDS)
def test_doctor_passes_clean_data_and_reports_corrupt_rows(
    backend: str, make_target: Callable[[str], Target], capsys: pytest.CaptureFixture[str]
) -> None:
    target = make_target(backend)
    seeded = asyncio.run(seed(target))
    assert main(["doctor", *target.args(), "--batch-size", "5"]) == 0
    out = capsys.readouterr().out
    assert f"checked 8 threads, {ITEMS} items, 4 attachments: all parse" in out

    tenant, thread_id, item_id = seeded.item_ids[3]
    bad_thread = seeded.thread_ids["bob"][2]
    bad_attachment = seeded.attachments["alice"][1]
    corrupt = {
        "items": (item_id, '{"type": "user_message", "id": "' + item_id + '"}'),
        "threads": (bad_thread, "{not json"),
        "attachments": (
            bad_attachment,
            '{"type": "file", "id": "atc_other", "name": "x", "mime_type": "text/plain"}',
        ),
    }

    async def corrupt_rows() -> None:
        db = Database.open(target.url, target.prefix)
        async with db.engine.connect() as conn:
            for table, (row_id, data) in corrupt.items():
                await conn.execute(
                    text(f"UPDATE {target.prefix}{table} SET data = :data WHERE id = :id"),
                    {"data": data, "id": row_id},
                )
        await db.close()

    async def stored() -> dict[str, str]:
        db = Database.open(target.url, target.prefix)
        async with db.engine.connect() as conn:
            found = {
                table: (
                    await conn.execute(
                        text(f"SELECT data FROM {target.prefix}{table} WHERE id = :id"),
                        {"id": row_id},
                    )
                ).scalar_one()
                for table, (row_id, _data) in corrupt.items()
            }
        await db.close()
        return found

    asyncio.run(corrupt_rows())
    assert main(["doctor", *target.args(), "--batch-size", "5"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert any(
        line.startswith(f"items tenant={tenant!r} thread_id={thread_id!r} id={item_id!r}: ")
        and "user_message" in line
        for line in lines
    ), out
    assert any(line.startswith(f"threads tenant='bob' id={bad_thread!r}: ") for line in lines)
    assert any(
        f"attachments tenant='alice' id={bad_attachment!r}: data names id 'atc_other'" in line
        for line in lines
    )
    assert f"checked 8 threads, {ITEMS} items, 4 attachments: 3 rows do not parse" in lines[-1]
    assert asyncio.run(stored()) == {table: data for table, (_id, data) in corrupt.items()}


# copy


def test_copy_sqlite_postgres_mariadb_sqlite_keeps_everything(
    make_target: Callable[[str], Target], capsys: pytest.CaptureFixture[str]
) -> None:
    chain = [make_target(backend) for backend in ("sqlite", "postgres", "mysql", "sqlite")]
    seeded = asyncio.run(seed(chain[0]))
    expected = asyncio.run(snapshot(chain[0], seeded))
    expected_rows = asyncio.run(raw_rows(chain[0]))
    assert expected_rows["items"] and expected_rows["threads"]

    for source, dest in itertools.pairwise(chain):
        argv = ["copy", source.url, dest.url, "--table-prefix", source.prefix]
        argv += ["--to-table-prefix", dest.prefix, "--batch-size", "4", "-q"]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "created the chatkit-stores tables" in out
        assert "threads: 8 copied, 0 already there" in out
        assert f"items: {ITEMS} copied, 0 already there" in out
        assert asyncio.run(snapshot(dest, seeded)) == expected
        assert asyncio.run(raw_rows(dest)) == expected_rows, "same rows, same relative order"

    for source, dest in itertools.pairwise(chain):  # again: nothing changes
        argv = ["copy", source.url, dest.url, "--table-prefix", source.prefix]
        assert main([*argv, "--to-table-prefix", dest.prefix, "-q"]) == 0
        out = capsys.readouterr().out
        assert "created" not in out
        assert f"items: 0 copied, {ITEMS} already there" in out
        assert "attachments: 0 copied, 4 already there" in out
        assert asyncio.run(raw_rows(dest)) == expected_rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_stops_at_different_data_and_overwrites_nothing(
    backend: str, make_target: Callable[[str], Target], capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = make_target("sqlite"), make_target(backend)
    seeded = asyncio.run(seed(source))
    thread_id = seeded.thread_ids["bob"][1]  # "case"

    async def squat() -> None:
        async with dest.store() as store:
            await store.create_schema()
            await store.save_thread(
                models.thread(thread_id, T0, "someone else's"), {"user_id": "bob"}
            )

    async def dest_titles() -> dict[str, list[str | None]]:
        async with dest.store() as store:
            return {
                tenant: [
                    t.title
                    for t in (await store.load_threads(100, None, "asc", {"user_id": tenant})).data
                ]
                for tenant in seeded.tenants
            }

    asyncio.run(squat())
    argv = ["copy", source.url, dest.url, "--table-prefix", source.prefix]
    assert main([*argv, "--to-table-prefix", dest.prefix, "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"threads tenant='bob' id={thread_id!r} with different data" in err
    assert "without overwriting" in err
    assert asyncio.run(dest_titles()) == {"alice": [], "bob": ["someone else's"]}
    rows = asyncio.run(raw_rows(dest))
    assert (len(rows["threads"]), len(rows["items"]), len(rows["attachments"])) == (1, 0, 0)


def test_copy_resumes_after_a_partial_copy(
    make_target: Callable[[str], Target], capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = make_target("sqlite"), make_target("sqlite")
    seeded = asyncio.run(seed(source))
    argv = ["copy", source.url, dest.url, "--table-prefix", source.prefix]
    argv += ["--to-table-prefix", dest.prefix, "-q"]
    assert main(argv) == 0

    async def lose_some() -> None:  # as if the first copy had stopped half way
        db = Database.open(dest.url, dest.prefix)
        async with db.engine.connect() as conn:
            for table in TABLES:
                await conn.execute(
                    text(
                        f"DELETE FROM {dest.prefix}{table} WHERE seq > "
                        f"(SELECT MAX(seq) / 2 FROM {dest.prefix}{table})"
                    )
                )
        await db.close()

    asyncio.run(lose_some())
    capsys.readouterr()
    assert main(argv) == 0
    assert (
        f"items: {ITEMS // 2} copied, {ITEMS - ITEMS // 2} already there" in capsys.readouterr().out
    )
    assert asyncio.run(raw_rows(dest)) == asyncio.run(raw_rows(source))
    assert asyncio.run(snapshot(dest, seeded)) == asyncio.run(snapshot(source, seeded))


# export / import


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_import_round_trip(
    backend: str,
    make_target: Callable[[str], Target],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dest = make_target("sqlite"), make_target(backend)
    seeded = asyncio.run(seed(source))
    file = tmp_path / "export.jsonl"
    assert main(["export", str(file), source.url, "--table-prefix", source.prefix, "-q"]) == 0
    assert f"exported 8 threads, {ITEMS} items, 4 attachments" in capsys.readouterr().out

    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert lines[0]["format"] == "chatkit-stores" and lines[0]["version"] == 1
    assert lines[-1] == {
        "format": "chatkit-stores",
        "end": True,
        "rows": {"threads": 8, "items": ITEMS, "attachments": 4},
    }
    item = next(line for line in lines[1:-1] if line["table"] == "items")
    assert set(item) == {"table", "tenant", "thread_id", "id", "type", "created_at", "data"}
    assert isinstance(item["data"], str)

    args = [str(file), dest.url, "--table-prefix", dest.prefix, "-q"]
    assert main(["import", *args]) == 0
    assert f"items: {ITEMS} imported, 0 already there" in capsys.readouterr().out
    assert asyncio.run(snapshot(dest, seeded)) == asyncio.run(snapshot(source, seeded))
    assert asyncio.run(raw_rows(dest)) == asyncio.run(raw_rows(source))

    assert main(["import", *args]) == 0, "importing twice changes nothing"
    assert f"items: 0 imported, {ITEMS} already there" in capsys.readouterr().out
    assert asyncio.run(raw_rows(dest)) == asyncio.run(raw_rows(source))


def test_export_and_import_take_the_file_first_and_the_older_order_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"

    async def one_thread() -> None:
        async with SQLStore.from_url(url) as store:
            await store.save_thread(models.thread("thr_1"), {"user_id": "u"})

    asyncio.run(one_thread())
    older, newer, from_env = (tmp_path / f"{name}.jsonl" for name in ("older", "newer", "env"))
    assert main(["export", url, str(older), "-q"]) == 0  # URL FILE, as before
    assert main(["export", str(newer), url, "-q"]) == 0  # FILE URL, as documented
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["export", str(from_env), "-q"]) == 0  # FILE, the URL from the environment
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"exported 1 thread, 0 items, 0 attachments from {url} to {older}"
    assert [len(path.read_text().splitlines()) for path in (older, newer, from_env)] == [3, 3, 3]
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert main(["import", copy, str(newer), "-q"]) == 0  # either order works for import too
    assert main(["import", str(older), copy, "-q"]) == 0
    assert capsys.readouterr().out.splitlines()[-3] == "threads: 0 imported, 1 already there"


def test_import_refuses_bad_files(
    make_target: Callable[[str], Target], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = make_target("sqlite"), make_target("sqlite")
    asyncio.run(seed(source))
    file = tmp_path / "export.jsonl"
    assert main(["export", source.url, str(file), "--table-prefix", source.prefix, "-q"]) == 0
    lines = file.read_text().splitlines(keepends=True)
    capsys.readouterr()

    def run(content: str) -> str:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(content)
        assert main(["import", str(bad), dest.url, "--table-prefix", dest.prefix, "-q"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "version 2" in run(lines[0].replace('"version": 1', '"version": 2') + "".join(lines[1:]))
    assert not Path(dest.url.removeprefix("sqlite:///")).exists(), "refused before migrating"
    assert "not a chatkit-stores export" in run("".join(lines[1:]))
    assert "line 3: a row of items needs 'thread_id'" in run(
        lines[0] + lines[1] + json.dumps({**json.loads(lines[2]), "table": "items"}) + "\n"
    )
    assert f"export was cut short; imported the {8 + ITEMS + 4} rows" in run("".join(lines[:-1]))
    assert main(["import", str(file), dest.url, "--table-prefix", dest.prefix, "-q"]) == 0
    assert f"items: 0 imported, {ITEMS} already there" in capsys.readouterr().out


# prune


@pytest.mark.parametrize("backend", BACKENDS)
def test_prune_removes_only_inactive_threads(
    backend: str,
    make_target: Callable[[str], Target],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = make_target(backend)
    files = tmp_path / "files"
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=200), now - timedelta(days=1)
    alice, bob = {"user_id": "alice"}, {"user_id": "bob"}
    ids: dict[str, str] = {}

    async def setup() -> dict[str, str]:
        async with target.store() as store:
            await store.create_schema()
            disk = DiskAttachmentStore(store, files, base_url="http://t", secret=SECRET)
            for name, ctx, created, last_item in [
                ("alice_old", alice, old, old + timedelta(days=3)),
                ("alice_active", alice, old, recent),
                ("alice_new", alice, recent, None),
                ("bob_old", bob, old, old),
            ]:
                thread = models.thread(created_at=created)
                ids[name] = thread.id
                await store.save_thread(thread, ctx)
                if last_item is not None:
                    await store.add_thread_item(thread.id, models.user_message(thread.id, old), ctx)
                    await store.add_thread_item(
                        thread.id, models.assistant_message(thread.id, last_item), ctx
                    )
                upload = await disk.upload(
                    name.encode(),
                    name="f.txt",
                    mime_type="text/plain",
                    context=ctx,
                    thread_id=thread.id,
                )
                ids[f"{name}_file"] = upload.id
        return ids

    async def state() -> dict[str, tuple[bool, int, bool]]:
        """Per thread: does it load, how many items, do its attachment bytes exist."""
        out: dict[str, tuple[bool, int, bool]] = {}
        async with target.store() as store:
            disk = DiskAttachmentStore(store, files, base_url="http://t", secret=SECRET)
            for name in ("alice_old", "alice_active", "alice_new", "bob_old"):
                ctx = alice if name.startswith("alice") else bob
                try:
                    await store.load_thread(ids[name], ctx)
                    found = True
                except NotFoundError:
                    found = False
                items = await store.load_thread_items(ids[name], None, 100, "asc", ctx)
                has_bytes = disk.path(ctx["user_id"], ids[f"{name}_file"]).is_file()
                out[name] = (found, len(items.data), has_bytes)
        return out

    asyncio.run(setup())
    before = asyncio.run(state())
    assert before == {
        "alice_old": (True, 2, True),
        "alice_active": (True, 2, True),
        "alice_new": (True, 0, True),
        "bob_old": (True, 2, True),
    }
    prune = ["prune", *target.args(), "--older-than", "90d", "--batch-size", "1"]

    assert main([*prune, "--dry-run", "--upload-dir", str(files)]) == 0
    out = capsys.readouterr().out
    assert f"would remove thread tenant='alice' id={ids['alice_old']!r}" in out
    assert f"would remove thread tenant='bob' id={ids['bob_old']!r}" in out
    assert ids["alice_active"] not in out and ids["alice_new"] not in out
    assert "would remove 2 threads with 4 items and 2 attachments" in out
    assert asyncio.run(state()) == before, "a dry run changes nothing"

    assert main([*prune, "--tenant", "bob", "--upload-dir", str(files)]) == 0
    out = capsys.readouterr().out
    assert f"removed thread tenant='bob' id={ids['bob_old']!r}" in out
    assert "removed 1 thread with 2 items and 1 attachment," in out
    assert asyncio.run(state()) == {**before, "bob_old": (False, 0, False)}

    assert main([*prune, "--upload-dir", str(files)]) == 0
    assert "removed 1 thread with" in capsys.readouterr().out
    after = asyncio.run(state())
    assert after == {**before, "bob_old": (False, 0, False), "alice_old": (False, 0, False)}

    async def attachment_gone() -> None:
        async with target.store() as store:
            with pytest.raises(NotFoundError):
                await store.load_attachment(ids["alice_old_file"], alice)
            await store.load_attachment(ids["alice_active_file"], alice)

    asyncio.run(attachment_gone())
    assert main([*prune]) == 0
    assert "removed 0 threads with" in capsys.readouterr().out


def test_prune_without_attachment_store_keeps_bytes(
    make_target: Callable[[str], Target], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = make_target("sqlite")
    files = tmp_path / "files"
    ctx = {"user_id": "u"}

    async def setup() -> Path:
        async with target.store() as store:
            disk = DiskAttachmentStore(store, files, base_url="http://t", secret=SECRET)
            thread = models.thread(created_at=datetime.now(timezone.utc) - timedelta(weeks=3))
            await store.save_thread(thread, ctx)
            upload = await disk.upload(
                b"x", name="x.txt", mime_type="text/plain", context=ctx, thread_id=thread.id
            )
            return disk.path("u", upload.id)

    path = asyncio.run(setup())
    assert main(["prune", *target.args(), "--older-than", "2w"]) == 0
    assert "removed 1 thread with 0 items and 1 attachment," in capsys.readouterr().out
    assert path.is_file(), "without --upload-dir only the metadata goes"


# errors


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "postgresql://postgres:secret@127.0.0.1:1/nope"],
        ["export", "mysql://root:secret@127.0.0.1:1/nope", "out.jsonl"],
        ["prune", "postgresql://postgres:secret@127.0.0.1:1/nope", "--older-than", "1d"],
        ["copy", "SOURCE", "postgresql://postgres:secret@127.0.0.1:1/nope"],
        ["copy", "postgresql://postgres:secret@127.0.0.1:1/nope", "DEST"],
    ],
)
def test_unreachable_database_is_one_line_naming_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src.db"
    asyncio.run(seed(Target(f"sqlite:///{source}", "chatkit_")))
    argv = [
        arg.replace("SOURCE", f"sqlite:///{source}").replace("DEST", f"sqlite:///{tmp_path}/d.db")
        for arg in argv
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "cannot use " in err and "127.0.0.1:1/nope" in err
    assert "secret" not in err


def test_missing_tables_and_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", f"sqlite:///{tmp_path}/missing.db"]) == 1
    assert "no SQLite database at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
    asyncio.run(seed(Target(f"sqlite:///{tmp_path}/x.db", "chatkit_")))
    assert main(["doctor", f"sqlite:///{tmp_path}/x.db", "--table-prefix", "other_"]) == 1
    assert "no chatkit-stores tables with prefix 'other_'" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "none.jsonl"), f"sqlite:///{tmp_path}/y.db"]) == 1
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", f"sqlite:///{tmp_path}/x.db"])  # --older-than is required


# the sessions docs/operations.md shows

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
NOW = datetime.now(timezone.utc).replace(tzinfo=None)


async def seed_documented(url: str, files: Path) -> None:
    """What the page's sessions find: acme's thread thr_1, last active on 2025-06-01 08:12:40,
    with 3 items (msg_2, an assistant message, lost its thread_id) and an attachment; globex's
    thread thr_2, recent, whose JSON is corrupt; acme's upload atc_2 of two days ago, unsent."""
    acme, globex = {"tenant_id": "acme"}, {"tenant_id": "globex"}
    june = datetime(2025, 6, 1, 8, 12, 40)
    async with SQLStore.from_url(url) as store:
        await store.create_schema()
        disk = DiskAttachmentStore(store, files, base_url="http://t", secret=SECRET)
        await store.save_thread(models.thread("thr_1", june - timedelta(days=3)), acme)
        for n, item in enumerate(
            [models.user_message, models.assistant_message, models.user_message], start=1
        ):
            made = item("thr_1", june - timedelta(minutes=3 - n))
            await store.add_thread_item("thr_1", made.model_copy(update={"id": f"msg_{n}"}), acme)
        await store.save_thread(models.thread("thr_2", NOW), globex)
        ids = iter(["atc_1", "atc_2"])
        disk.generate_attachment_id = lambda *_: next(ids)  # type: ignore[method-assign]
        for thread_id in ("thr_1", None):
            await disk.upload(
                b"x", name="a.txt", mime_type="text/plain", context=acme, thread_id=thread_id
            )
        t = store.tables
        async with store.engine.begin() as conn:
            await conn.execute(
                t.items.update()
                .where(t.items.c.id == "msg_2")
                .values(data=text("REPLACE(data, '\"thread_id\":\"thr_1\",', '')"))
            )
            await conn.execute(
                t.threads.update().where(t.threads.c.id == "thr_2").values(data="{1:2}")
            )
            for attachment_id, created in (("atc_1", june), ("atc_2", NOW - timedelta(days=2))):
                where = t.attachments.c.id == attachment_id
                await conn.execute(t.attachments.update().where(where).values(created_at=created))


def test_the_documented_sessions_print_what_the_page_shows(
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/operations.md's sessions (doctor, prune, orphans) on a new PostgreSQL database that
    ``postgresql://app@db/chat`` stands for, and a folder for ``/var/lib/chat/files``."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    files = tmp_path / "files"
    with own_database(postgres_url, tmp_path) as database:
        asyncio.run(seed_documented(database, files))
        ran = run_sessions(
            DOCS,
            "tests/test_operations.py runs this session",
            capsys,
            monkeypatch,
            stand_in={"postgresql://app@db/chat": database, "/var/lib/chat/files": str(files)},
        )
    assert ran == 5
    assert [path.name for path in files.rglob("*") if path.is_file()] == []
