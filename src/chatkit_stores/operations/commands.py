"""What each database command of ``chatkit-stores`` does once its arguments are parsed.

``chatkit_stores.cli`` parses the command line and turns errors into one line; the functions
here get the parsed arguments, check the URLs, run the operation and print what it did. They
check the URLs before importing the database machinery, so a mistyped URL is answered at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from . import UsageError
from .wording import NOUNS, duration, plural

if TYPE_CHECKING:
    from ..encryption import KeyRing
    from ..files import AttachmentStoreBase
    from ..sql import SQLStore
    from .transfer import TransferReport


def database_url(given: str | None) -> str:
    """The URL given, else ``$DATABASE_URL``, checked (``UsageError`` when neither is usable)."""
    from .urls import check_url

    if given:
        check_url(given)
        return given
    from_env = os.environ.get("DATABASE_URL")
    if not from_env:
        raise UsageError("give a database URL or set DATABASE_URL")
    check_url(from_env, source="DATABASE_URL")
    return from_env


def check_urls(args: argparse.Namespace) -> None:
    """Check the URLs a command names (or ``$DATABASE_URL``) before it imports anything heavy."""
    if args.command in ("export", "import"):
        database_url(file_and_url(args)[1])
    elif args.command == "copy":
        database_url(args.source)
        database_url(args.dest)
    elif "url" in vars(args):
        database_url(args.url)


def migration(args: argparse.Namespace) -> int:
    """``migrate``, ``downgrade``, ``stamp`` and ``current``."""
    import asyncio

    from .. import migrations
    from ..sql.schema import make_tables
    from .database import blame, check_sqlite_file, safe_url

    url = database_url(args.url)
    prefix = args.table_prefix
    make_tables(prefix)  # a bad prefix is one line before anything connects
    if getattr(args, "sql", False):
        action = args.command.replace("migrate", "upgrade")
        print(migrations.offline_sql(action, url, args.revision, prefix=prefix))
        return 0
    if args.command != "migrate":  # only migrate may create a SQLite file
        check_sqlite_file(url)
    with blame(url):
        if args.command == "migrate":
            rls = {"on": True, "off": False, None: None}[args.row_level_security]
            asyncio.run(
                migrations.migrate(url, args.revision, prefix=prefix, row_level_security=rls)
            )
        elif args.command == "downgrade":
            asyncio.run(migrations.downgrade(url, args.revision, prefix=prefix))
        elif args.command == "stamp":
            asyncio.run(migrations.stamp(url, args.revision, prefix=prefix))
        revision = asyncio.run(migrations.current(url, prefix=prefix))
    print(f"{safe_url(url)}: {revision or 'no chatkit-stores revision (base)'}")
    return 0


def history(args: argparse.Namespace) -> int:
    """``history``: the shipped revisions, oldest first."""
    from ..migrations import history as revisions

    for revision, message in revisions():
        print(f"{revision}  {message.splitlines()[0] if message else ''}")
    return 0


def attachment_store(args: argparse.Namespace, store: Any) -> AttachmentStoreBase[Any] | None:
    """The attachment store the flags name, linked to ``store``; None when they name none."""
    if args.upload_dir:
        from ..files import DiskAttachmentStore

        # Deleting needs no signing; a throwaway secret satisfies the constructor.
        return DiskAttachmentStore(
            store, args.upload_dir, base_url="http://unused", secret=secrets.token_bytes(32)
        )
    if args.s3_bucket:
        from ..files.s3 import S3AttachmentStore

        return S3AttachmentStore(
            store, args.s3_bucket, prefix=args.s3_prefix, endpoint_url=args.s3_endpoint_url
        )
    return None


@contextlib.asynccontextmanager
async def opened_store(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[SQLStore[Any], AttachmentStoreBase[Any] | None]]:
    """The open store of ``args.url`` and ``--table-prefix`` (a missing SQLite file is refused),
    and the attachment store the flags name, linked to it; errors inside blame its URL."""
    from ..sql import SQLStore
    from .database import blame, check_sqlite_file

    url = database_url(args.url)
    check_sqlite_file(url)
    store = SQLStore.from_url(url, table_prefix=args.table_prefix)
    files = attachment_store(args, store)
    with blame(store.engine.url.render_as_string(hide_password=False)):
        async with store:
            yield store, files


async def orphans(args: argparse.Namespace) -> int:
    """``orphans``: delete (or with ``--dry-run`` list) uploads never sent in a message."""
    from .database import require_tables

    verb = "would delete" if args.dry_run else "deleted"
    listed = 0

    def show(tenant: str, attachment_id: str) -> None:
        nonlocal listed
        listed += 1
        print(f"{verb} attachment tenant={tenant!r} id={attachment_id!r}", flush=True)

    async with opened_store(args) as (store, files):
        assert files is not None  # the flags are required
        await require_tables(store)
        total = await files.delete_orphans(args.older_than, dry_run=args.dry_run, on_orphan=show)
    age = f"older than {duration(args.older_than)}"
    if args.dry_run:
        print(f"would delete {plural(listed, 'orphaned attachment')} {age} (dry run)")
        return 0
    strays = total - listed
    files_too = f" and {plural(strays, 'file')} without metadata" if strays else ""
    print(f"deleted {plural(listed, 'orphaned attachment')}{files_too} {age}")
    return 0


def _progress(args: argparse.Namespace, verb: str) -> Callable[[str, int | None], Any]:
    from .progress import Progress

    return lambda label, total: Progress(f"{verb} {label}", total, enabled=not args.quiet)


def _batches(args: argparse.Namespace, verb: str) -> dict[str, Any]:
    """The table prefix, batch size and progress display of a command that reads every row."""
    return {
        "prefix": args.table_prefix,
        "batch_size": args.batch_size,
        "progress": _progress(args, verb),
    }


def _print_transfer(report: TransferReport, url: str, verb: str) -> None:
    """What ``copy`` or ``import`` did: the tables it created, the rows per table."""
    from .database import safe_url

    if report.migrated:
        print(f"created the chatkit-stores tables in {safe_url(url)}")
    print("\n".join(report.lines(verb)))


async def doctor(args: argparse.Namespace) -> int:
    """``doctor``: validate every stored blob."""
    from .database import safe_url
    from .doctor import Problem, doctor

    def show(problem: Problem) -> None:
        print(problem, flush=True)

    url = database_url(args.url)
    keys = encryption_keys(required=False)
    report = await doctor(
        url, prefix=args.table_prefix, batch_size=args.batch_size, on_problem=show, keys=keys
    )
    print(f"{safe_url(url)}: {report.summary()}")
    by_key = report.key_summary()
    if by_key is not None:
        print(by_key)
    return 0 if report.ok else 1


def encryption_keys(*, required: bool, compress: bool = False) -> KeyRing | None:
    """The key ring in ``$CHATKIT_STORES_ENCRYPTION_KEYS``; None when unset and not required."""
    from ..encryption import ENVIRONMENT_VARIABLE, KeyRing

    if not required and not os.environ.get(ENVIRONMENT_VARIABLE, "").strip():
        return None
    try:
        return KeyRing.from_env(compress=compress)
    except ValueError as error:
        raise UsageError(str(error)) from None


async def rekey(args: argparse.Namespace) -> int:
    """``rekey``: seal every row with the current key of ``$CHATKIT_STORES_ENCRYPTION_KEYS``."""
    from .database import safe_url
    from .rekey import Unreadable, rekey

    url = database_url(args.url)
    keys = encryption_keys(required=True, compress=args.compress)
    assert keys is not None

    def show(row: Unreadable) -> None:
        print(row, flush=True)

    report = await rekey(url, keys, on_unreadable=show, **_batches(args, "sealing"))
    print(f"{safe_url(url)}: {report.summary()}")
    return 0 if report.ok else 1


async def copy(args: argparse.Namespace) -> int:
    """``copy SRC_URL [DST_URL]``."""
    from .transfer import copy

    source = database_url(args.source)
    dest = database_url(args.dest)
    batches = _batches(args, "copying")
    report = await copy(source, dest, dest_prefix=args.to_table_prefix, **batches)
    _print_transfer(report, dest, "copied")
    return 0


def file_and_url(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(FILE, URL)`` of ``export``/``import FILE [URL]``, also from the older ``URL FILE``.

    The older order is recognised when the first argument looks like a URL (``://``) or the
    second like a file (``-`` or ``.jsonl``), and not the other way round.
    """
    first, second = args.file, args.url
    older = second is not None and (_url_like(first) or _file_like(second))
    if older and not (_url_like(second) or _file_like(first)):
        return second, first
    return first, second


def _url_like(text: str) -> bool:
    return "://" in text


def _file_like(text: str) -> bool:
    return text == "-" or text.endswith(".jsonl")


async def export(args: argparse.Namespace) -> int:
    """``export FILE [URL]``."""
    from .database import safe_url
    from .transfer import export

    path, given = file_and_url(args)
    url = database_url(given)
    rows = await export(url, path, **_batches(args, "exporting"))
    counts = ", ".join(plural(count, NOUNS[table]) for table, count in rows.items())
    where = "stdout" if path == "-" else path
    out = sys.stderr if path == "-" else sys.stdout
    print(f"exported {counts} from {safe_url(url)} to {where}", file=out)
    return 0


async def import_(args: argparse.Namespace) -> int:
    """``import FILE [URL]``."""
    from .transfer import import_

    path, given = file_and_url(args)
    url = database_url(given)
    _print_transfer(await import_(path, url, **_batches(args, "importing")), url, "imported")
    return 0


async def prune(args: argparse.Namespace) -> int:
    """``prune``: delete (or list) threads inactive for ``--older-than``."""
    from ..tenancy import check_tenant
    from .prune import StaleThread, prune

    tenant = None if args.tenant is None else check_tenant(args.tenant, source="--tenant")
    verb = "would remove" if args.dry_run else "removed"

    def show(thread: StaleThread) -> None:
        print(f"{verb} {thread}", flush=True)

    # The attachment store is linked: delete_thread deletes the bytes too.
    async with opened_store(args) as (store, _):
        report = await prune(
            store,
            args.older_than,
            tenant=tenant,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            on_thread=show,
        )
    print(report.summary(dry_run=args.dry_run))
    return 0


async def erase_tenant(args: argparse.Namespace) -> int:
    """``erase-tenant URL TENANT``: delete (or count) everything of one tenant."""
    from ..tenancy import check_tenant
    from .erase import erase_tenant

    if args.url is None and "://" in args.tenant:
        raise UsageError(
            f"{args.tenant!r} looks like a database URL, not a tenant: erase-tenant URL TENANT"
        )
    tenant = check_tenant(args.tenant, source="TENANT")
    if args.metadata_only and (args.upload_dir or args.s3_bucket):
        raise UsageError(
            "--metadata-only erases no attachment files: leave out --upload-dir/--s3-bucket"
        )
    if not args.metadata_only and not (args.upload_dir or args.s3_bucket):
        raise UsageError(
            "where are the tenant's attachment files? give --upload-dir or --s3-bucket, "
            "or --metadata-only to erase the database rows alone"
        )
    async with opened_store(args) as (store, files):
        report = await erase_tenant(
            store,
            tenant,
            files=files,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            progress=None if args.dry_run else _progress(args, "erasing"),
        )
    print(report.summary(dry_run=args.dry_run))
    if report.total == 0 and report.passes <= 1:
        print(f"nothing is stored for tenant {tenant!r} (keys are exact: case and spaces count)")
    return 0
