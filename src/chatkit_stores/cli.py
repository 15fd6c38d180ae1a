"""The ``chatkit-stores`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .files import AttachmentStoreBase

CONFORMANCE_HELP = """\
Run the store conformance suite (chatkit_stores.testing.StoreTests) against the stores FACTORY
makes, with no test file: prints pytest's report and exits with pytest's exit code.

MODULE is imported with the current directory on sys.path (as with python -m). FACTORY is
called with no arguments, once per test, and may be an @asynccontextmanager function, an async
generator function, an async function or plain callable returning a Store, or a Store class.
A returned store is closed with its close() after the test; a context manager or generator
must release it itself. MODULE may also define, all optional:

  capabilities   a chatkit_stores.testing.Capabilities: features the store lacks
  make_context   a zero-argument callable returning a request context of a new tenant
                 (default: {"user_id": <random>})
  reopen         async (store) -> store: close the store and open a new one on the same
                 data; runs the durability tests, which skip without it

Example my_conformance.py:

  @asynccontextmanager
  async def make_store():
      async with MyStore(DATABASE_URL) as store:
          yield store

  capabilities = Capabilities(concurrent_writes=False)

  $ chatkit-stores conformance my_conformance:make_store -q -x

Everything after MODULE:FACTORY goes to pytest (-q, -v, -x, -k EXPR, --tb=short...). Your
project's conftest.py and pytest ini settings are not used. An unusable MODULE:FACTORY (bad
syntax, import error, missing attribute, a factory that raises or does not make a Store)
exits with 2 and one line on stderr. Needs pip install 'chatkit-stores[testing]'.
"""


def main(argv: list[str] | None = None) -> int:
    """Run the ``chatkit-stores`` command line."""
    parser = argparse.ArgumentParser(prog="chatkit-stores", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _demo_command(commands)
    conformance = commands.add_parser(
        "conformance",
        help="run the store conformance suite against MODULE:FACTORY",
        description=CONFORMANCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conformance.add_argument(
        "target", metavar="MODULE:FACTORY", help="what makes the stores, e.g. my_stores:make_store"
    )
    conformance.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        metavar="PYTEST_ARG",
        help="passed on to pytest, e.g. -q -x -k paginate",
    )

    def with_url(name: str, help: str, *, revision: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=f"{help}. {URL_HELP}")
        sub.add_argument("url", nargs="?", help="database URL (default: $DATABASE_URL)")
        if revision == "required":
            sub.add_argument("revision", help="a revision id, or base / head")
        elif revision == "optional":
            sub.add_argument("--to", dest="revision", default="head", help="revision (head)")
        sub.add_argument("--table-prefix", default="chatkit_", help="table prefix (chatkit_)")
        return sub

    migrate = with_url("migrate", "upgrade the chatkit-stores tables", revision="optional")
    for sub in (
        migrate,
        with_url("downgrade", "downgrade the chatkit-stores tables", revision="required"),
    ):
        sub.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    migrate.add_argument(
        "--row-level-security",
        choices=["on", "off"],
        help="PostgreSQL: create (on) or drop (off) the tenant policies; see docs/security.md",
    )
    with_url("stamp", "record a revision as current without running it", revision="required")
    with_url("current", "print the revision the database is at")
    commands.add_parser("history", help="list the shipped revisions")

    orphans = commands.add_parser(
        "orphans",
        help="delete attachments never put in a thread (bytes and metadata)",
        description="Delete attachments that were uploaded but never sent in a message within "
        "--older-than, with their bytes. URL defaults to $DATABASE_URL.",
    )
    orphans.add_argument("url", nargs="?", help="database URL (default: $DATABASE_URL)")
    orphans.add_argument("--older-than", type=parse_duration, default="1d", help="e.g. 6h, 2d")
    _attachment_flags(orphans, required=True)
    orphans.add_argument(
        "--table-prefix", default="chatkit_", help="table prefix (default chatkit_)"
    )
    _operation_commands(commands)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import DemoSettings, run_demo

        return run_demo(DemoSettings.from_env(host=args.host, port=args.port), check=args.check)
    elif args.command == "conformance":
        return _conformance(args.target, args.pytest_args)
    elif args.command == "orphans":
        return _database_errors(lambda: asyncio.run(_orphans(args)), args.url)
    elif args.command == "history":
        from .migrations import history

        for revision, message in history():
            print(f"{revision}  {message.splitlines()[0] if message else ''}")
    elif args.command in ("migrate", "downgrade", "stamp", "current"):
        return _database_errors(lambda: _migration(args), args.url)
    elif args.command in OPERATIONS:
        url = args.dest if args.command == "copy" else args.url
        try:
            return _database_errors(lambda: asyncio.run(OPERATIONS[args.command](args)), url)
        except KeyboardInterrupt:
            print(f"chatkit-stores {args.command}: interrupted", file=sys.stderr)
            return 130
    return 0


URL_HELP = "URL defaults to $DATABASE_URL; postgresql://, mysql:// and sqlite:// are accepted."


def _migration(args: argparse.Namespace) -> int:
    from . import migrations

    url = database_url(args.url)
    prefix = args.table_prefix
    if getattr(args, "sql", False):
        print(
            migrations.offline_sql(
                args.command.replace("migrate", "upgrade"), url, args.revision, prefix=prefix
            )
        )
        return 0
    if args.command == "migrate":
        rls = {"on": True, "off": False, None: None}[args.row_level_security]
        asyncio.run(migrations.migrate(url, args.revision, prefix=prefix, row_level_security=rls))
    elif args.command == "downgrade":
        asyncio.run(migrations.downgrade(url, args.revision, prefix=prefix))
    elif args.command == "stamp":
        asyncio.run(migrations.stamp(url, args.revision, prefix=prefix))
    revision = asyncio.run(migrations.current(url, prefix=prefix))
    print(f"{_safe_url(url)}: {revision or 'no chatkit-stores revision (base)'}")
    return 0


def _database_errors(work: Callable[[], int], url: str | None) -> int:
    """Run ``work``; a database that cannot be reached or refuses us is one line, exit 1."""
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError, OperationalError

    from .migrations import MigrationError
    from .operations import OperationError
    from .tenancy import TenantError

    try:
        return work()
    except BrokenPipeError:  # stdout closed early (| head): not the database's fault
        raise
    except (OSError, OperationalError, DBAPIError) as error:
        # Operations on two databases record which one failed.
        where = _safe_url(getattr(error, "chatkit_stores_url", None) or database_url(url))
        reason = getattr(error, "orig", None) or error
        print(
            f"chatkit-stores: error: cannot use {where}: {reason}".splitlines()[0], file=sys.stderr
        )
    except (
        MigrationError,
        OperationError,
        TenantError,
        NoSuchModuleError,
        ValueError,
        ImportError,
    ) as error:
        print(f"chatkit-stores: error: {error}".splitlines()[0], file=sys.stderr)
    return 1


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database URL"


def parse_duration(text: str) -> timedelta:
    """Parse ``30m``, ``6h``, ``90d`` or ``2w`` into a timedelta."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30m, 6h, 90d, 2w)")
    return timedelta(**{units[unit]: int(number)})


def database_url(url: str | None) -> str:
    """The URL given, else ``$DATABASE_URL``; exits with a one-line error when neither is set."""
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("chatkit-stores: error: give a database URL or set DATABASE_URL")
    return url


def _attachment_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The flags that name an attachment store (``orphans``, ``prune``)."""
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--upload-dir", type=Path, help="root of a DiskAttachmentStore")
    where.add_argument("--s3-bucket", help="bucket of an S3AttachmentStore")
    parser.add_argument("--s3-prefix", default="chatkit/", help="key prefix (default chatkit/)")
    parser.add_argument("--s3-endpoint-url", help="S3 endpoint, for S3-compatible services")


def _attachment_store(args: argparse.Namespace, store: Any) -> AttachmentStoreBase[Any] | None:
    """The attachment store the flags name, linked to ``store``; None when they name none."""
    from .files import DiskAttachmentStore

    if args.upload_dir:
        # Deleting needs no signing; a throwaway secret satisfies the constructor.
        return DiskAttachmentStore(
            store, args.upload_dir, base_url="http://unused", secret=secrets.token_bytes(32)
        )
    if args.s3_bucket:
        from .files.s3 import S3AttachmentStore

        return S3AttachmentStore(
            store, args.s3_bucket, prefix=args.s3_prefix, endpoint_url=args.s3_endpoint_url
        )
    return None


async def _orphans(args: argparse.Namespace) -> int:
    from .sql import SQLStore

    store: SQLStore[Any] = SQLStore.from_url(database_url(args.url), table_prefix=args.table_prefix)
    files = _attachment_store(args, store)
    assert files is not None
    async with store:
        deleted = await files.delete_orphans(args.older_than)
    print(f"deleted {deleted} orphaned attachment(s) older than {args.older_than}")
    return 0


DOCTOR_HELP = """\
Check that every stored thread, item and attachment still parses with the installed
openai-chatkit models, for every tenant. Prints each row that does not (table, tenant, id and
the first validation error) and the counts; exits 0 when all parse, 1 otherwise. Only reads.
"""

COPY_HELP = """\
Copy every tenant's threads, items and attachment metadata from SRC_URL to DST_URL (default
$DATABASE_URL), keeping ids, tenants, timestamps and order. DST_URL is migrated first when it
has no chatkit-stores tables. Rows already there with the same data are skipped, so running it
again resumes or does nothing; a row there with different data stops the copy (exit 1) and is
never overwritten. Attachment bytes are not copied.
"""

PRUNE_HELP = """\
Delete threads whose last activity (the thread's or its newest item's created_at) is older
than --older-than, with their items and attachment metadata, and their attachment bytes when
--upload-dir or --s3-bucket names the attachment store. Prints each thread; --dry-run only
lists them. URL defaults to $DATABASE_URL.
"""


def _positive(text: str) -> int:
    """An argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _operation_commands(commands: Any) -> None:
    """Add ``doctor``, ``copy``, ``export``, ``import`` and ``prune``."""

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=help,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    def common(sub: argparse.ArgumentParser, *, quiet: bool = False) -> None:
        sub.add_argument(
            "--table-prefix", default="chatkit_", help="table prefix (default chatkit_)"
        )
        sub.add_argument(
            "--batch-size", type=_positive, default=500, help="rows per batch (default 500)"
        )
        if quiet:
            sub.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    url_help = "database URL (default: $DATABASE_URL)"
    doctor = add("doctor", "check that every stored blob still parses", DOCTOR_HELP)
    doctor.add_argument("url", nargs="?", help=url_help)
    common(doctor)

    copy = add("copy", "copy every tenant's data to another database", COPY_HELP)
    copy.add_argument("source", metavar="SRC_URL", help="the database to read")
    copy.add_argument("dest", metavar="DST_URL", nargs="?", help=url_help)
    common(copy, quiet=True)
    copy.add_argument("--to-table-prefix", help="table prefix in DST_URL (default: --table-prefix)")

    export = add(
        "export",
        "write every tenant's data to a JSON Lines file",
        "Write every tenant's threads, items and attachment metadata to FILE (- for stdout) "
        "in the versioned chatkit-stores JSON Lines format (see docs/operations.md). "
        "URL defaults to $DATABASE_URL.",
    )
    export.add_argument("url", nargs="?", help=url_help)
    export.add_argument("file", metavar="FILE", help="the .jsonl file to write, or -")
    common(export, quiet=True)

    import_ = add(
        "import",
        "load a JSON Lines export into a database",
        "Insert the rows of FILE (- for stdin), made by `chatkit-stores export`, into URL "
        "(default $DATABASE_URL), migrated first when empty. Like copy: rows already there "
        "with the same data are skipped, different data stops the import.",
    )
    import_.add_argument("file", metavar="FILE", help="the .jsonl file to read, or -")
    import_.add_argument("url", nargs="?", help=url_help)
    common(import_, quiet=True)

    prune = add("prune", "delete threads inactive for longer than --older-than", PRUNE_HELP)
    prune.add_argument("url", nargs="?", help=url_help)
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, help="e.g. 90d, 12w, 36h"
    )
    prune.add_argument("--tenant", help="only this tenant's threads")
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    _attachment_flags(prune, required=False)
    common(prune)


def _progress(args: argparse.Namespace, verb: str) -> Callable[[str, int | None], Any]:
    from .operations.progress import Progress

    return lambda label, total: Progress(f"{verb} {label}", total, enabled=not args.quiet)


async def _doctor(args: argparse.Namespace) -> int:
    from .operations.doctor import Problem, doctor

    def show(problem: Problem) -> None:
        print(problem, flush=True)

    url = database_url(args.url)
    report = await doctor(
        url, prefix=args.table_prefix, batch_size=args.batch_size, on_problem=show
    )
    print(f"{_safe_url(url)}: {report.summary()}")
    return 0 if report.ok else 1


async def _copy(args: argparse.Namespace) -> int:
    from .operations.transfer import copy

    dest = database_url(args.dest)
    report = await copy(
        args.source,
        dest,
        prefix=args.table_prefix,
        dest_prefix=args.to_table_prefix,
        batch_size=args.batch_size,
        progress=_progress(args, "copying"),
    )
    if report.migrated:
        print(f"created the chatkit-stores tables in {_safe_url(dest)}")
    print("\n".join(report.lines("copied")))
    return 0


async def _export(args: argparse.Namespace) -> int:
    from .operations.transfer import export

    url = database_url(args.url)
    rows = await export(
        url,
        args.file,
        prefix=args.table_prefix,
        batch_size=args.batch_size,
        progress=_progress(args, "exporting"),
    )
    counts = ", ".join(f"{count} {table}" for table, count in rows.items())
    where = "stdout" if args.file == "-" else args.file
    out = sys.stderr if args.file == "-" else sys.stdout
    print(f"exported {counts} from {_safe_url(url)} to {where}", file=out)
    return 0


async def _import(args: argparse.Namespace) -> int:
    from .operations.transfer import import_

    url = database_url(args.url)
    report = await import_(
        args.file,
        url,
        prefix=args.table_prefix,
        batch_size=args.batch_size,
        progress=_progress(args, "importing"),
    )
    if report.migrated:
        print(f"created the chatkit-stores tables in {_safe_url(url)}")
    print("\n".join(report.lines("imported")))
    return 0


async def _prune(args: argparse.Namespace) -> int:
    from .operations.database import check_sqlite_file
    from .operations.prune import StaleThread, prune
    from .sql import SQLStore
    from .tenancy import check_tenant

    url = database_url(args.url)
    tenant = None if args.tenant is None else check_tenant(args.tenant, source="--tenant")
    check_sqlite_file(url)
    store: SQLStore[Any] = SQLStore.from_url(url, table_prefix=args.table_prefix)
    _attachment_store(args, store)  # linked: delete_thread deletes the bytes too
    verb = "would remove" if args.dry_run else "removed"

    def show(thread: StaleThread) -> None:
        print(f"{verb} {thread}", flush=True)

    async with store:
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


OPERATIONS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "doctor": _doctor,
    "copy": _copy,
    "export": _export,
    "import": _import,
    "prune": _prune,
}


DEMO_HELP = """\
Serve a ChatKit server with a small web page on this machine: threads in a SQLite file
(chatkit-demo.db), attachments in a folder (chatkit-demo-uploads), an offline echo responder.
Prints where it listens and a curl line that creates a thread. Users are picked by name with the
X-Demo-User header: a demo, not authentication. Needs pip install 'chatkit-stores[demo]'.
"""


def _demo_command(commands: Any) -> None:
    """Add ``demo``."""
    from .demo.settings import DEFAULT_HOST, DEFAULT_PORT, ENVIRONMENT_HELP, HOST_ENV, PORT_ENV

    demo = commands.add_parser(
        "demo",
        help="serve a ChatKit demo server and page on the stores",
        description=DEMO_HELP,
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--host", help=f"address to listen on (${HOST_ENV}, else {DEFAULT_HOST})")
    demo.add_argument(
        "--port",
        type=_port_number,
        help=f"port (${PORT_ENV}, else {DEFAULT_PORT}); 0 takes a free one and prints it",
    )
    demo.add_argument(
        "--check",
        action="store_true",
        help="no server: one protocol round trip on the configured backends, then exit",
    )


def _port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _conformance(target: str, pytest_args: list[str]) -> int:
    """Run ``chatkit-stores conformance``, importing pytest only now."""
    if any(importlib.util.find_spec(name) is None for name in ("pytest", "pytest_asyncio")):
        print(
            "chatkit-stores conformance: error: needs pytest and pytest-asyncio: "
            "pip install 'chatkit-stores[testing]'",
            file=sys.stderr,
        )
        return 2
    from .testing.runner import run

    return run(target, pytest_args)
