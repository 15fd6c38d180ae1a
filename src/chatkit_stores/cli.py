"""The ``chatkit-stores`` command: the parser, and every mistake as one line on stderr.

Building the parser imports nothing heavy (no SQLAlchemy, Alembic, ChatKit or demo), so
``--help`` and usage errors answer at once; each command imports what it needs when it runs
(:mod:`chatkit_stores.operations.commands`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .operations.errors import FAILED as EXIT_FAILED
from .operations.errors import USAGE as EXIT_USAGE

PROG = "chatkit-stores"

EXIT_OK = 0
EXIT_INTERRUPTED = 130
__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

DESCRIPTION = """\
Run and maintain the databases of chatkit-stores: migrations (migrate, current, history,
downgrade, stamp), checks and moves (doctor, copy, export, import), clean-ups (prune, orphans,
erase-tenant), the conformance suite for your own store, and a demo server.
"""

EPILOG = """\
A database URL left out means $DATABASE_URL. Exit status: 0 done; 1 the command could not do
its work (database unreachable or refusing, tables that are not ours, a missing SQLite file;
doctor: rows that do not parse); 2 the command line or configuration is wrong (bad option or
URL, driver not installed); 130 interrupted. Errors are one line on stderr, password hidden.
"""

URL_HELP = "database URL (default: $DATABASE_URL): sqlite:///PATH, postgresql://..., mysql://..."

CONFORMANCE_HELP = """\
Run the store conformance suite (chatkit_stores.testing.StoreTests) against the stores FACTORY
makes, with no test file: prints pytest's report and exits with pytest's exit code.

MODULE is imported with the current directory on sys.path (as with python -m). FACTORY is
called with no arguments, once per test, and may be an @asynccontextmanager function, an async
generator function, an async function or plain callable returning a Store, or a Store class.
A returned store is closed with its close() after the test; a context manager or generator
must release it itself. MODULE may also define, all optional:

  capabilities   a chatkit_stores.testing.Capabilities: policies the store does not follow
                 and features it lacks, e.g. Capabilities.opt_out(id_prefixes="why")
  make_context   a zero-argument callable returning a request context of a new tenant
                 (default: {"user_id": <random>})
  reopen         async (store) -> store: close the store and open a new one on the same
                 data; runs the durability tests, which skip without it
  expected_failures  {"test_name": "reason", ...}: known gaps, run as strict xfails

Example my_conformance.py:

  @asynccontextmanager
  async def make_store():
      async with MyStore(DATABASE_URL) as store:
          yield store

  capabilities = Capabilities.opt_out(concurrent_writes="one connection")

  $ chatkit-stores conformance my_conformance:make_store -q -x

Everything after MODULE:FACTORY goes to pytest (-q, -v, -x, -k EXPR, --tb=short...). Your
project's conftest.py and pytest ini settings are not used. An unusable MODULE:FACTORY (bad
syntax, import error, missing attribute, a factory that raises or does not make a Store)
exits with 2 and one line on stderr. Needs pip install 'chatkit-stores[testing]'.
"""

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

EXPORT_HELP = """\
Write every tenant's threads, items and attachment metadata to FILE (- for stdout) in the
versioned chatkit-stores JSON Lines format (see docs/operations.md). URL defaults to
$DATABASE_URL. The older order, export URL FILE, still works.
"""

IMPORT_HELP = """\
Insert the rows of FILE (- for stdin), made by chatkit-stores export, into URL (default
$DATABASE_URL), migrated first when it has no chatkit-stores tables. Like copy: rows already
there with the same data are skipped, different data stops the import.
"""

PRUNE_HELP = """\
Delete threads whose last activity (the thread's or its newest item's created_at) is older
than --older-than, with their items and attachment metadata, and their attachment bytes when
--upload-dir or --s3-bucket names the attachment store. Prints each thread; --dry-run only
lists them. URL defaults to $DATABASE_URL.
"""

ERASE_TENANT_HELP = """\
Delete every thread, item and attachment record of TENANT, and every attachment file of it in
the attachment store that --upload-dir or --s3-bucket names (--metadata-only: the database
rows alone). Other tenants are never touched. Runs in batches of --batch-size rows, each
committed on its own: an interrupted run is finished by running it again. Passes repeat until
one finds nothing, so writes that overlap the erasure are erased too; block the tenant's access
first. --dry-run prints the counts and deletes nothing. Audited (tenant.erase). URL defaults to
$DATABASE_URL.
"""

ORPHANS_HELP = """\
Delete attachments uploaded more than --older-than ago and never sent in a message, bytes and
metadata, and bytes older than that with no metadata at all. Prints each attachment deleted;
--dry-run only lists the orphans. URL defaults to $DATABASE_URL.
"""

REKEY_HELP = """\
Seal every stored thread, item and attachment record with the current encryption key: rows
sealed with an older key of the ring, and plaintext rows written before encryption was turned
on. The key ring comes from $CHATKIT_STORES_ENCRYPTION_KEYS (id:base64key pairs separated by
commas, the current key first) and must hold every key rows are sealed with. Batches of
--batch-size rows, one transaction each; a row a request saves meanwhile is never overwritten
with older content. Running it again resumes or does nothing. Exits 1 when some rows could not
be opened (they are listed and left as they are). With --compress, rows sealed without
compression are sealed again, deflated; without it, deflated rows are left as they are.
URL defaults to $DATABASE_URL.
"""

DEMO_HELP = """\
Serve a ChatKit server with a small web page on this machine: threads in a SQLite file
(chatkit-demo.db), attachments in a folder (chatkit-demo-uploads), an offline echo responder.
Prints where it listens and a curl line that creates a thread. Users are picked by name with the
X-Demo-User header: a demo, not authentication. Needs pip install 'chatkit-stores[demo]'.
"""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, and whose help may be lazy.

    ``complete_help`` is called once before the help is first formatted: the demo's help
    names its settings, which live in a module not worth importing for other commands.
    """

    def __init__(
        self, *args: Any, complete_help: Callable[[Parser], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.complete_help = complete_help

    def format_help(self) -> str:
        """The help, completed first when it is lazy."""
        if self.complete_help is not None:
            complete, self.complete_help = self.complete_help, None
            complete(self)
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        """Exit with ``EXIT_USAGE`` and one line naming the problem and the help."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> timedelta:
    """An argparse type: ``30s``, ``30m``, ``6h``, ``90d``, ``2w`` or ``1d12h``."""
    from .operations.wording import parse_duration as parse

    try:
        return parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(text: str) -> int:
    """An argparse type: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def build_parser() -> Parser:
    """The whole command line."""
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = _adder(commands)
    _migration_commands(add)
    _operation_commands(add)
    _encryption_commands(add)
    _demo_command(add)
    conformance = add(
        "conformance", "run the store conformance suite against MODULE:FACTORY", CONFORMANCE_HELP
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
    return parser


Adder = Callable[..., Parser]


def _adder(commands: Any) -> Adder:
    def add(name: str, help: str, description: str | None = None, **kwargs: Any) -> Parser:
        sub: Parser = commands.add_parser(
            name,
            help=help,
            description=description or f"{help[0].upper()}{help[1:]}.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        return sub

    return add


def _table_prefix(sub: Parser) -> None:
    sub.add_argument("--table-prefix", default="chatkit_", help="table prefix (default chatkit_)")


def _migration_commands(add: Adder) -> None:
    """Add ``migrate``, ``current``, ``history``, ``downgrade`` and ``stamp``."""
    migrate = add(
        "migrate",
        "create or upgrade the chatkit-stores tables",
        "Create or upgrade the chatkit-stores tables (to the newest revision, or --to), then "
        "print the revision. Tables with our names that our migrations did not make are "
        "refused, and nothing is changed.",
    )
    migrate.add_argument("url", nargs="?", help=URL_HELP)
    migrate.add_argument("--to", dest="revision", default="head", help="revision (head)")
    downgrade = add(
        "downgrade",
        "downgrade the chatkit-stores tables",
        "Downgrade the chatkit-stores tables to REVISION; base drops them and their data.",
    )
    downgrade.add_argument("url", nargs="?", help=URL_HELP)
    downgrade.add_argument("revision", help="a revision id, or base")
    for sub in (migrate, downgrade):
        sub.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    migrate.add_argument(
        "--row-level-security",
        choices=["on", "off"],
        help="PostgreSQL: create (on) or drop (off) the tenant policies; see docs/security.md",
    )
    stamp = add(
        "stamp",
        "record a revision as current without running it",
        "Record REVISION as the one the tables are at, running nothing: for tables made "
        "without our migrations. The tables must have that revision's columns.",
    )
    stamp.add_argument("url", nargs="?", help=URL_HELP)
    stamp.add_argument("revision", help="a revision id, head, or base")
    current = add("current", "print the revision the database is at")
    current.add_argument("url", nargs="?", help=URL_HELP)
    for sub in (migrate, downgrade, stamp, current):
        _table_prefix(sub)
    distribute = add(
        "distribute",
        "distribute the tables by tenant on Citus",
        "Distribute the three tables by tenant on a Citus coordinator, co-located, so that a "
        "tenant's statements run on one worker (docs/citus.md). Tables already distributed "
        "are left alone. Run migrate first.",
    )
    distribute.add_argument("url", nargs="?", help=URL_HELP)
    _table_prefix(distribute)
    add(
        "history",
        "list the shipped revisions",
        "List the revisions shipped in this version of chatkit-stores, oldest first: "
        "the id migrate --to, downgrade and stamp take, and what the revision does.",
    )


def _attachment_flags(sub: Parser, *, required: bool) -> None:
    """The flags that name an attachment store (``orphans``, ``prune``)."""
    where = sub.add_mutually_exclusive_group(required=required)
    where.add_argument("--upload-dir", type=Path, help="root of a DiskAttachmentStore")
    where.add_argument("--s3-bucket", help="bucket of an S3AttachmentStore")
    sub.add_argument("--s3-prefix", default="chatkit/", help="key prefix (default chatkit/)")
    sub.add_argument("--s3-endpoint-url", help="S3 endpoint, for S3-compatible services")


def _common(sub: Parser, *, quiet: bool = False) -> None:
    """``--table-prefix`` and ``--batch-size`` (and ``--quiet``) of the commands that read rows."""
    _table_prefix(sub)
    sub.add_argument(
        "--batch-size", type=positive, default=500, help="rows per batch (default 500)"
    )
    if quiet:
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _operation_commands(add: Adder) -> None:
    """Add ``doctor``, ``copy``, ``export``, ``import``, ``prune`` and ``orphans``."""
    doctor = add("doctor", "check that every stored blob still parses", DOCTOR_HELP)
    doctor.add_argument("url", nargs="?", help=URL_HELP)
    _common(doctor)

    copy = add("copy", "copy every tenant's data to another database", COPY_HELP)
    copy.add_argument("source", metavar="SRC_URL", help="the database to read")
    copy.add_argument("dest", metavar="DST_URL", nargs="?", help=URL_HELP)
    _common(copy, quiet=True)
    copy.add_argument("--to-table-prefix", help="table prefix in DST_URL (default: --table-prefix)")

    export = add("export", "write every tenant's data to a JSON Lines file", EXPORT_HELP)
    export.add_argument("file", metavar="FILE", help="the .jsonl file to write, or -")
    export.add_argument("url", metavar="URL", nargs="?", help=URL_HELP)
    _common(export, quiet=True)

    import_ = add("import", "load a JSON Lines export into a database", IMPORT_HELP)
    import_.add_argument("file", metavar="FILE", help="the .jsonl file to read, or -")
    import_.add_argument("url", metavar="URL", nargs="?", help=URL_HELP)
    _common(import_, quiet=True)

    prune = add("prune", "delete threads inactive for longer than --older-than", PRUNE_HELP)
    prune.add_argument("url", nargs="?", help=URL_HELP)
    prune.add_argument(
        "--older-than", type=parse_duration, required=True, help="e.g. 90d, 12w, 36h, 1d12h"
    )
    prune.add_argument("--tenant", help="only this tenant's threads")
    prune.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    _attachment_flags(prune, required=False)
    _common(prune)

    erase = add("erase-tenant", "delete everything one tenant has stored", ERASE_TENANT_HELP)
    erase.add_argument("url", metavar="URL", nargs="?", help=URL_HELP)
    erase.add_argument("tenant", metavar="TENANT", help="the tenant key, exactly as stored")
    erase.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    _attachment_flags(erase, required=False)
    erase.add_argument(
        "--metadata-only",
        action="store_true",
        help="no attachment store: erase the database rows alone",
    )
    _common(erase, quiet=True)

    orphans = add(
        "orphans", "delete attachments never sent in a message (bytes and metadata)", ORPHANS_HELP
    )
    orphans.add_argument("url", nargs="?", help=URL_HELP)
    orphans.add_argument(
        "--older-than", type=parse_duration, default="1d", help="e.g. 30s, 6h, 2d (default 1d)"
    )
    orphans.add_argument("--dry-run", action="store_true", help="list the orphans, delete nothing")
    _attachment_flags(orphans, required=True)
    _table_prefix(orphans)


def _encryption_commands(add: Adder) -> None:
    """Add ``rekey``."""
    rekey = add("rekey", "seal every row with the current encryption key", REKEY_HELP)
    rekey.add_argument("url", nargs="?", help=URL_HELP)
    rekey.add_argument(
        "--compress",
        action="store_true",
        help="deflate each row before sealing it, as KeyRing(..., compress=True) does",
    )
    _common(rekey, quiet=True)


def _demo_command(add: Adder) -> None:
    """Add ``demo`` (its help lists the environment it reads, from the demo's settings)."""
    demo = add(
        "demo",
        "serve a ChatKit demo server and page on the stores",
        DEMO_HELP,
        complete_help=_demo_help,
    )
    demo.add_argument("--host", help="address to listen on")
    demo.add_argument("--port", type=port_number, help="port; 0 takes a free one and prints it")
    demo.add_argument(
        "--check",
        action="store_true",
        help="no server: one protocol round trip on the configured backends, then exit",
    )


def _demo_help(demo: Parser) -> None:
    from .demo.settings import DEFAULT_HOST, DEFAULT_PORT, ENVIRONMENT_HELP, HOST_ENV, PORT_ENV

    demo.epilog = ENVIRONMENT_HELP
    for action in demo._actions:
        if action.dest == "host":
            action.help = f"address to listen on (${HOST_ENV}, else {DEFAULT_HOST})"
        elif action.dest == "port":
            action.help = f"port (${PORT_ENV}, else {DEFAULT_PORT}); 0 takes a free one"


def main(argv: list[str] | None = None) -> int:
    """Run the ``chatkit-stores`` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "conformance":
        return _conformance(args.target, args.pytest_args)
    if args.command == "demo":
        urls = [os.environ.get("DATABASE_URL") or ""]
        return one_line_errors(lambda: _demo(args), prog=f"{PROG} demo", urls=urls)
    return one_line_errors(lambda: _database_command(args), urls=_urls_of(args))


def _database_command(args: argparse.Namespace) -> int:
    from .operations import commands

    commands.check_urls(args)  # a mistyped URL is answered before asyncio is even imported
    import asyncio
    import inspect

    command = args.command.replace("import", "import_").replace("-", "_")
    if command in ("migrate", "downgrade", "stamp", "current"):
        return commands.migration(args)
    if command == "distribute":
        from .operations import distribute

        return distribute.command(args)
    run = getattr(commands, command)
    if inspect.iscoroutinefunction(run):
        status: int = asyncio.run(run(args))
        return status
    return int(run(args))


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo
    from .operations.database import blame

    settings = DemoSettings.from_env(host=args.host, port=args.port)
    with blame(settings.database_url):
        return run_demo(settings, check=args.check)


def _urls_of(args: argparse.Namespace) -> list[str]:
    """The URLs a command may name in an error (to hide their passwords)."""
    given = [getattr(args, name, None) for name in ("url", "source", "dest", "file")]
    return [url for url in [*given, os.environ.get("DATABASE_URL")] if url]


def one_line_errors(work: Callable[[], int], *, prog: str = PROG, urls: Iterable[str] = ()) -> int:
    """Run ``work``; an error anyone can fix is one line on stderr and an exit status.

    Unexpected errors (bugs) keep their traceback.
    """
    try:
        return work()
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        from .operations.errors import explain

        explained = explain(error)
        if explained is None:
            raise
        status, message = explained
        from .operations.urls import hide_passwords

        message = hide_passwords(message.splitlines()[0] if message else "", [*urls])
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status


def _conformance(target: str, pytest_args: list[str]) -> int:
    """Run ``chatkit-stores conformance``, importing pytest only now."""
    if any(importlib.util.find_spec(name) is None for name in ("pytest", "pytest_asyncio")):
        print(
            "chatkit-stores conformance: error: needs pytest and pytest-asyncio: "
            "pip install 'chatkit-stores[testing]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from .testing.runner import run

    return run(target, pytest_args)
