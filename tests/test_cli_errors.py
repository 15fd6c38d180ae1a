"""The catalogue of mistakes: every bad input to ``chatkit-stores`` is one line.

A newcomer's and a careless operator's mistakes (a bare path for a URL, a port typo, a scheme
typo, a missing driver, a missing SQLite file, someone else's tables, a prefix too long, a short
demo secret, a wrong password...) each give exactly one line on stderr, the exit status
docs/operations.md documents, no traceback, no password, and change nothing on disk or in the
database. Most cases run ``main()`` in-process (an uncaught exception fails the test); a sample
runs the installed command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatkit_stores import cli
from chatkit_stores.migrations import run_sync
from conftest import drop_tables

SECRET = "s3cret-pw"
MISSING = "sqlite:///missing.db"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
USAGE, FAILED = cli.EXIT_USAGE, cli.EXIT_FAILED
KEY = "A" * 43 + "="  # 32 bytes in base64


@dataclass
class Case:
    """One mistake: the arguments (``{url}`` is replaced), the status and a fragment of the line."""

    argv: list[str]
    status: int
    says: str
    env: dict[str, str] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()  # modules made unimportable (a missing extra)

    def __str__(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {' '.join(self.argv)}".strip()[:90]


def url_commands(url: str) -> list[list[str]]:
    """Every command that takes a database URL, with ``url`` in each URL position."""
    return [
        ["migrate", url],
        ["migrate", url, "--sql"],
        ["current", url],
        ["downgrade", url, "0001"],
        ["stamp", url, "0001"],
        ["doctor", url],
        ["orphans", url, "--upload-dir", "files"],
        ["orphans", url, "--upload-dir", "files", "--dry-run"],
        ["prune", url, "--older-than", "1d"],
        ["erase-tenant", url, "acme", "--metadata-only", "--dry-run"],
        ["export", "out.jsonl", url],
        ["export", url, "out.jsonl"],  # the older argument order
        ["import", "in.jsonl", url],
        ["copy", url, "sqlite:///copy.db"],
        ["copy", "sqlite:///chat.db", url],
        ["rekey", url],
        ["distribute", url],
    ]


BAD_URLS = [
    ("chat.db", "for the SQLite file chat.db write sqlite:///chat.db", ()),
    ("127.0.0.1/db", "write postgresql://USER@127.0.0.1/db or mysql://USER@127.0.0.1/db", ()),
    ("not a url", "is not a database URL: write sqlite:///PATH", ()),
    (f"postgresql://app:{SECRET}@127.0.0.1:99999/db", "port 99999 is out of range (1-65535)", ()),
    (f"postgresql://app:{SECRET}@127.0.0.1:54x32/db", "the port '54x32' is not a number", ()),
    (f"postgress://app:{SECRET}@127.0.0.1/db", "did you mean postgresql://?", ()),
    (f"oracle://app:{SECRET}@127.0.0.1/db", "unsupported database URL scheme 'oracle'", ()),
    (f"mysql+nodriver://app:{SECRET}@127.0.0.1/db", "no driver 'nodriver' for MySQL", ()),
    (
        f"postgresql://app:{SECRET}@127.0.0.1/db",
        "the asyncpg driver for PostgreSQL is not installed: "
        "pip install 'chatkit-stores[postgres]'",
        ("asyncpg",),
    ),
    (
        f"mysql://app:{SECRET}@127.0.0.1/db",
        "the aiomysql driver for MySQL/MariaDB is not installed: "
        "pip install 'chatkit-stores[mysql]'",
        ("aiomysql",),
    ),
]

CASES = [
    *(
        Case(argv, USAGE, says, hidden=hidden)
        for url, says, hidden in BAD_URLS
        for argv in url_commands(url)
    ),
    *(
        Case(
            argv, USAGE, "DATABASE_URL='chat.db' is not a database URL", {"DATABASE_URL": "chat.db"}
        )
        for argv in (["migrate"], ["current"], ["doctor"], ["export", "out.jsonl"])
    ),
    Case(["current"], USAGE, "give a database URL or set DATABASE_URL"),
    # SQLite files that are not there are not created (only migrate, import and copy's
    # destination make one)
    *(
        Case(argv, FAILED, "no SQLite database at missing.db (nothing was created)")
        for argv in [
            ["current", MISSING],
            ["downgrade", MISSING, "0001"],
            ["stamp", MISSING, "0001"],
            ["doctor", MISSING],
            ["orphans", MISSING, "--upload-dir", "files"],
            ["prune", MISSING, "--older-than", "1d", "--dry-run"],
            ["erase-tenant", MISSING, "acme", "--upload-dir", "files"],
            ["export", "out.jsonl", MISSING],
            ["copy", MISSING, "sqlite:///copy.db"],
        ]
    ),
    # values of options
    Case(["migrate", "sqlite:///chat.db", "--table-prefix", "bad-"], USAGE, "ASCII letters"),
    Case(
        ["migrate", "sqlite:///chat.db", "--table-prefix", "p" * 50 + "_"],
        USAGE,
        "over PostgreSQL's limit of 63; use at most 37 characters",
    ),
    Case(["doctor", "sqlite:///chat.db", "--table-prefix", "x;drop"], USAGE, "ASCII letters"),
    Case(["orphans", "--upload-dir", "files", "--older-than", "soon"], USAGE, "not a duration"),
    Case(["prune", "--older-than", "1.5d"], USAGE, "not a duration: '1.5d'"),
    Case(["prune", "--older-than", "30d", "--batch-size", "0"], USAGE, "not a positive integer"),
    Case(["prune", "sqlite:///chat.db"], USAGE, "required: --older-than"),
    Case(["migrate", "--bogus"], USAGE, "unrecognized arguments: --bogus"),
    Case(["frobnicate"], USAGE, "invalid choice: 'frobnicate'"),
    Case(["prune", "sqlite:///chat.db", "--older-than", "1d", "--tenant", ""], USAGE, "tenant"),
    # encryption keys
    Case(["rekey", "sqlite:///chat.db"], USAGE, "CHATKIT_STORES_ENCRYPTION_KEYS is not set"),
    Case(
        ["rekey", "sqlite:///chat.db"],
        USAGE,
        "CHATKIT_STORES_ENCRYPTION_KEYS: key 'k1' has 5 bytes; AES-256 needs 32",
        {"CHATKIT_STORES_ENCRYPTION_KEYS": "k1:c2hvcnQ="},
    ),
    Case(
        ["rekey", MISSING],
        FAILED,
        "no SQLite database at missing.db (nothing was created)",
        {"CHATKIT_STORES_ENCRYPTION_KEYS": f"k1:{KEY}"},
    ),
    # the demo's settings
    Case(
        ["demo", "--check"],
        USAGE,
        "CHATKIT_STORES_SECRET is 5 bytes; it must be at least 32",
        {"CHATKIT_STORES_SECRET": "short"},
    ),
    Case(
        ["demo", "--port", "0"],
        USAGE,
        "DATABASE_URL='postgress://app:***@127.0.0.1/db': unsupported database URL scheme",
        {"DATABASE_URL": f"postgress://app:{SECRET}@127.0.0.1/db"},
    ),
    Case(
        ["demo", "--check"],
        USAGE,
        "DATABASE_URL='chat.db' is not a database URL: for the SQLite file chat.db write",
        {"DATABASE_URL": "chat.db"},
    ),
    Case(
        ["demo", "--port", "0"],
        USAGE,
        "the asyncpg driver for PostgreSQL is not installed: pip install",
        {"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1/db"},
        hidden=("asyncpg",),
    ),
    Case(
        ["demo", "--check"],
        USAGE,
        "S3_BUCKET needs boto3: pip install 'chatkit-stores[s3]'",
        {"S3_BUCKET": "files"},
        hidden=("boto3",),
    ),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory holding chat.db (no tables) and in.jsonl; no $DATABASE_URL."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "DATABASE_URL",
        "CHATKIT_STORES_SECRET",
        "S3_BUCKET",
        "UPLOAD_DIR",
        "CHATKIT_STORES_ENCRYPTION_KEYS",
    ):
        monkeypatch.delenv(name, raising=False)
    sa.create_engine("sqlite:///chat.db").connect().close()
    (tmp_path / "in.jsonl").write_text("")
    return tmp_path


def files_in(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }


def tables_of(url: str) -> dict[str, list[str]]:
    """The tables of a database and their columns."""

    def read(conn: sa.Connection) -> dict[str, list[str]]:
        inspector = sa.inspect(conn)
        return {
            name: [column["name"] for column in inspector.get_columns(name)]
            for name in inspector.get_table_names()
        }

    import asyncio

    result: dict[str, list[str]] = asyncio.run(run_sync(url, read))
    return result


def assert_one_line(status: int, out: str, err: str, case: Case | str, expected: int) -> None:
    assert status == expected, f"{case}: exit {status}, not {expected}\n{err}"
    assert err.endswith("\n") and err.count("\n") == 1, f"{case}: not one line:\n{err}"
    assert re.match(r"chatkit-stores( \w+)?: error: ", err), err
    assert "Traceback" not in err and SECRET not in err + out, err


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse
        status = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_mistake_is_one_line_and_changes_nothing(
    case: Case,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    for module in case.hidden:
        monkeypatch.setitem(sys.modules, module, None)
    before = files_in(workdir)
    status, out, err = run_main(case.argv, capsys, monkeypatch)
    assert_one_line(status, out, err, case, case.status)
    assert case.says in err, f"{case}: {err}"
    assert files_in(workdir) == before, f"{case} changed files"


def test_every_command_that_takes_a_url_is_in_the_catalogue() -> None:
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    takes_url = {
        name
        for name, sub in commands.items()
        if any(action.dest in ("url", "source", "dest") for action in sub._actions)
    }
    assert takes_url == {command[0] for command in url_commands("x")}


# databases that are there but not usable as asked


@dataclass
class ServerCase:
    name: str
    argv: Callable[[str, str], list[str]]  # (url, prefix) -> arguments
    status: int
    says: str
    prepare: Callable[[str, str], None] = lambda url, prefix: None


def foreign_threads(url: str, prefix: str) -> None:
    import asyncio

    def create(conn: sa.Connection) -> None:
        metadata = sa.MetaData()
        sa.Table(
            f"{prefix}threads",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(20)),
        )
        metadata.create_all(conn)

    asyncio.run(run_sync(url, create))


def refused_login(url: str) -> str:
    """A login the server refuses: a wrong password (MariaDB), an unknown user (PostgreSQL,
    which trusts every local user here)."""
    parsed = make_url(url).set(password=SECRET)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(username=f"nobody{uuid.uuid4().hex[:6]}")
    return parsed.render_as_string(hide_password=False)


def unreachable(url: str) -> str:
    return make_url(url).set(port=1, password=SECRET).render_as_string(hide_password=False)


SERVER_CASES = [
    ServerCase(
        "migrate over foreign tables",
        lambda url, p: ["migrate", url, "--table-prefix", p],
        FAILED,
        "exist but were not made by chatkit-stores migrations",
        foreign_threads,
    ),
    ServerCase(
        "stamp foreign tables",
        lambda url, p: ["stamp", url, "0001", "--table-prefix", p],
        FAILED,
        "threads has no created_at, data, seq, tenant",
        foreign_threads,
    ),
    ServerCase(
        "stamp without tables",
        lambda url, p: ["stamp", url, "head", "--table-prefix", p],
        FAILED,
        "There are no chatkit-stores tables with prefix",
    ),
    ServerCase(
        "doctor without tables",
        lambda url, p: ["doctor", url, "--table-prefix", p],
        FAILED,
        "has no chatkit-stores tables with prefix",
    ),
    ServerCase(
        "orphans without tables",
        lambda url, p: ["orphans", url, "--table-prefix", p, "--upload-dir", "files"],
        FAILED,
        "has no chatkit-stores tables with prefix",
    ),
    ServerCase(
        "prune without tables",
        lambda url, p: ["prune", url, "--table-prefix", p, "--older-than", "1s"],
        FAILED,
        "has no chatkit-stores tables with prefix",
    ),
    ServerCase(
        "distribute without Citus",
        lambda url, p: ["distribute", url, "--table-prefix", p],
        FAILED,
        "distribute needs a Citus coordinator (PostgreSQL with CREATE EXTENSION citus)",
    ),
    ServerCase(
        "prefix too long",
        lambda url, p: ["migrate", url, "--table-prefix", p * 5],
        USAGE,
        "is too long",
    ),
    ServerCase(
        "wrong password",
        lambda url, p: ["current", refused_login(url)],
        FAILED,
        "cannot use ",
    ),
    ServerCase(
        "unreachable",
        lambda url, p: ["migrate", unreachable(url), "--table-prefix", p],
        FAILED,
        "cannot use ",
    ),
]


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///chat.db"
        return
    yield str(request.getfixturevalue(f"{request.param}_url"))


@pytest.mark.parametrize("case", SERVER_CASES, ids=lambda case: case.name)
def test_a_database_we_cannot_use_as_asked_is_one_line_and_unchanged(
    case: ServerCase,
    database: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.name in ("wrong password", "unreachable") and database.startswith("sqlite"):
        pytest.skip("a SQLite file has no password and no server")
    prefix = f"err{uuid.uuid4().hex[:8]}_"
    try:
        case.prepare(database, prefix)
        before, files = tables_of(database), files_in(workdir)
        status, out, err = run_main(case.argv(database, prefix), capsys, monkeypatch)
        assert_one_line(status, out, err, case.name, case.status)
        assert case.says in err, err
        assert tables_of(database) == before, "the database changed"
        assert files_in(workdir) == files, "files changed"
    finally:
        import asyncio

        asyncio.run(drop_tables(database, prefix))


def test_a_wrong_mariadb_password_stops_the_demo_before_it_listens(
    mysql_url: str,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", refused_login(mysql_url))
    for argv in (["demo", "--port", "0"], ["demo", "--check"]):
        before = files_in(workdir)
        status, out, err = run_main(argv, capsys, monkeypatch)
        assert_one_line(status, out, err, " ".join(argv), FAILED)
        assert err.startswith("chatkit-stores demo: error: cannot use mysql://") and "1045" in err
        assert "Listening" not in out and files_in(workdir) == before


# the real command, as a user runs it


@pytest.mark.parametrize(
    ("argv", "env", "status"),
    [
        (["migrate", "chat.db"], {}, USAGE),
        (["current", f"postgresql://app:{SECRET}@127.0.0.1:99999/db"], {}, USAGE),
        (["current", "sqlite:///missing.db"], {}, FAILED),
        (["demo", "--check"], {"CHATKIT_STORES_SECRET": "short"}, USAGE),
        (["orphans", "--upload-dir", "files", "--older-than", "soon"], {}, USAGE),
    ],
    ids=lambda value: str(value)[:40],
)
def test_the_installed_command(
    argv: list[str], env: dict[str, str], status: int, tmp_path: Path
) -> None:
    command = Path(sys.executable).with_name("chatkit-stores")
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [str(command), *argv],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line(done.returncode, done.stdout, done.stderr, " ".join(argv), status)
    assert list(tmp_path.iterdir()) == []


def test_the_exit_statuses_are_documented() -> None:
    page = DOCS.read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", page, re.M))
    assert set(rows) == {"0", "1", "2", "130"}, rows
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED) == (0, 1, 2, 130)
    assert "could not do its work" in rows["1"] and "is wrong" in rows["2"]
    assert "Exit status: 0 done; 1 the command could not do its work" in " ".join(
        cli.EPILOG.split()
    )


# the help


HEAVY = ("sqlalchemy", "alembic", "chatkit", "chatkit_stores.demo", "pydantic", "asyncio")


def helps() -> dict[str, str]:
    """The help of the command and of each subcommand."""
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return {"": parser.format_help(), **{name: sub.format_help() for name, sub in commands.items()}}


def test_every_help_describes_its_command_in_plain_text() -> None:
    texts = helps()
    assert set(texts) >= {"", "migrate", "history", "orphans", "export", "import", "demo"}
    for name, text in texts.items():
        assert "``" not in text and ":class:" not in text, f"{name} --help shows markup"
        rest = text.partition("\n\n")[2]
        description = rest.split("\n\n")[0].strip()
        assert description and not description.startswith(("positional", "options")), name
    assert "List the revisions shipped" in texts["history"]
    assert (
        "usage: chatkit-stores export [-h]" in texts["export"] and "FILE [URL]" in texts["export"]
    )
    assert "FILE [URL]" in texts["import"]
    assert "--dry-run" in texts["orphans"]
    assert "CHATKIT_STORES_DEMO_PORT" in texts["demo"] and "DATABASE_URL" in texts["demo"]


@pytest.mark.parametrize("argv", [[], *([name] for name in helps() if name)], ids=str)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    """The help answers at once: no SQLAlchemy, Alembic, ChatKit, pydantic or demo imported
    (the demo's help reads its settings, which live in the demo package)."""
    code = (
        "import sys\nfrom chatkit_stores.cli import main\n"
        f"try:\n    main({[*argv, '--help']!r})\nexcept SystemExit:\n    pass\n"
        f"print(*sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    imported = done.stdout.splitlines()[-1].split()
    if argv == ["demo"]:  # the demo package imports ChatKit's server
        assert "chatkit_stores.demo" in imported and "sqlalchemy" not in imported
    else:
        assert imported == []


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "chat.db"],
        ["current", f"postgresql://app:{SECRET}@127.0.0.1:54x32/db"],
        ["export", "out.jsonl", "postgress://app@127.0.0.1/db"],
        ["copy", "127.0.0.1/db", "sqlite:///chat.db"],
    ],
    ids=str,
)
def test_a_mistyped_url_is_answered_before_anything_heavy_is_imported(argv: list[str]) -> None:
    code = (
        "import sys\nfrom chatkit_stores.cli import main\n"
        f"status = main({argv!r})\n"
        f"print(status, *sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == [str(USAGE)], done.stdout + done.stderr
