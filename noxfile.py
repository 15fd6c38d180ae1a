"""Developer sessions: `nox -s tests`, `nox -s lint`."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (set CHATKIT_STORES_POSTGRES_URL / CHATKIT_STORES_MYSQL_URL)."""
    session.install(".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """Fault injection: connections cut, stalled, refused; cancellations; SIGKILL; S3 errors.

    Needs CHATKIT_STORES_POSTGRES_URL / CHATKIT_STORES_MYSQL_URL like ``tests``; ``-s`` prints
    the figures (cuts survived, writes acknowledged and found, crash iterations).
    """
    session.install(".[dev]")
    session.run("pytest", "tests/faults", "-s", *session.posargs)


OLDEST_CHATKIT = "1.6.0"


OLDEST_TESTS = (
    "tests/test_stores.py",
    "tests/test_races.py",
    "tests/test_thread_conflicts.py",
    "tests/test_fuzz.py",
    "tests/test_operations.py",
    "tests/test_suite_catches_bugs.py",
    "tests/test_conformance_command.py",
    "tests/test_demo.py",
    "tests/test_demo_server.py",
    "tests/test_examples.py",
)
"""The tests of what reads, writes or serves ChatKit's types, run on SQLite and in memory: the
SQL each server runs does not depend on the openai-chatkit version, the models around it do."""


@nox.session
def tests_oldest(session: nox.Session) -> None:
    """Run the ChatKit-facing tests against the oldest openai-chatkit the package supports."""
    session.install(".[dev]", f"openai-chatkit=={OLDEST_CHATKIT}")
    tests = session.posargs or [*OLDEST_TESTS, "-k", "not postgres and not mysql"]
    session.run("pytest", "-q", *tests)


UPSTREAM_BACKENDS = ("memory", "sqlite-file", "sqlite-memory", "postgres", "mysql")
UPSTREAM_URLS = {"postgres": "CHATKIT_STORES_POSTGRES_URL", "mysql": "CHATKIT_STORES_MYSQL_URL"}


@nox.session
def upstream(session: nox.Session) -> None:
    """openai-chatkit's own tests/test_chatkit_server.py against each of our stores.

    Downloads the sdist of the installed openai-chatkit (or of CHATKIT_STORES_UPSTREAM_CHATKIT,
    which is installed first), runs the test file once per backend with the stand-ins of
    tests/upstream for the modules the sdist leaves out. CHATKIT_STORES_UPSTREAM_BACKENDS
    (comma-separated) picks backends; arguments after ``--`` go to pytest.
    """
    session.install(".[dev]")
    if pinned := os.environ.get("CHATKIT_STORES_UPSTREAM_CHATKIT"):
        session.install(f"openai-chatkit=={pinned}")
    version = _installed_version(session, "openai-chatkit")
    backends = _upstream_backends(session)
    shim = Path(__file__).resolve().parent / "tests" / "upstream"
    with tempfile.TemporaryDirectory(prefix="chatkit-upstream-") as tmp:
        root = _upstream_tests(session, version, Path(tmp))
        shutil.copy(shim / "_types.py", root / "tests" / "_types.py")  # the sdist's `tests`
        failed = []
        with session.chdir(root):
            for backend in backends:
                session.log(f"openai-chatkit {version} server tests on {backend}")
                env = {"CHATKIT_STORES_UPSTREAM_BACKEND": backend, "PYTHONPATH": str(shim)}
                try:
                    session.run(
                        "python", "-m", "pytest", "tests/test_chatkit_server.py",
                        "-p", "no:cacheprovider", "-p", "upstream_plugin",
                        "--rootdir", ".", "-o", "asyncio_mode=auto",
                        "-o", "asyncio_default_fixture_loop_scope=function",
                        "-W", "ignore:Direct usage of named widget classes:DeprecationWarning",
                        "-ra", *session.posargs,
                        env=env,
                    )  # fmt: skip
                except nox.command.CommandFailed:
                    failed.append(backend)
    if failed:
        session.error(f"openai-chatkit {version} server tests failed on: {', '.join(failed)}")


def _installed_version(session: nox.Session, name: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    output = session.run("python", "-c", code, silent=True)
    return str(output).strip()


def _upstream_backends(session: nox.Session) -> list[str]:
    """The backends to run: a database without its URL is skipped (an error if required)."""
    chosen = os.environ.get("CHATKIT_STORES_UPSTREAM_BACKENDS")
    names = [n.strip() for n in chosen.split(",")] if chosen else list(UPSTREAM_BACKENDS)
    if unknown := set(names) - set(UPSTREAM_BACKENDS):
        session.error(f"unknown backends {sorted(unknown)}; known: {UPSTREAM_BACKENDS}")
    backends = []
    for name in names:
        variable = UPSTREAM_URLS.get(name)
        if variable and not os.environ.get(variable):
            if os.environ.get("CHATKIT_STORES_REQUIRE_BACKENDS") == "1":
                session.error(f"{name}: {variable} is not set (CHATKIT_STORES_REQUIRE_BACKENDS=1)")
            session.warn(f"skipping {name}: set {variable} to run it")
            continue
        backends.append(name)
    return backends


def _upstream_tests(session: nox.Session, version: str, tmp: Path) -> Path:
    """Download the openai-chatkit sdist into ``tmp``; return the directory holding its tests/."""
    session.run(
        "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(tmp),
        f"openai-chatkit=={version}",
    )  # fmt: skip
    (sdist,) = tmp.glob("*.tar.gz")
    safe: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.split("/")[1:2] == ["tests"]]
        archive.extractall(tmp / "sdist", members=members, **safe)  # type: ignore[arg-type]
    roots = list((tmp / "sdist").glob("*/tests/test_chatkit_server.py"))
    if not roots:
        session.error(f"the openai-chatkit {version} sdist has no tests/test_chatkit_server.py")
    return roots[0].parent.parent


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and use the installed wheel as a user would.

    Builds from the checkout's tracked and new files (as .ci/newcomer copies them; the wheel is
    built from the sdist), runs ``twine check --strict``, and checks that the wheel holds every
    file of ``src/chatkit_stores`` (migrations, templates, the demo's page). Then, with the wheel
    installed in this session's fresh virtualenv and run from an empty folder (nothing can be
    imported from the checkout): a migration of a new SQLite file and ``current`` at the head,
    the conformance command on the example factory, ``demo --check``, and the demo server
    answering its page, a static file and one ChatKit request.
    """
    root = Path(__file__).resolve().parent
    session.install("build", "twine")
    tmp = Path(session.create_tmp()).resolve()
    for name in ("source", "dist", "use"):
        shutil.rmtree(tmp / name, ignore_errors=True)
    files = _checkout_files(session, root)
    for name in files:
        (tmp / "source" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, tmp / "source" / name)
    session.run("python", "-m", "build", "--outdir", str(tmp / "dist"), str(tmp / "source"))
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    (built,) = (tmp / "dist").glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(built))
    with zipfile.ZipFile(built) as archive:
        shipped = set(archive.namelist())
    package = [n.removeprefix("src/") for n in files if n.startswith("src/chatkit_stores/")]
    if missing := sorted(set(package) - shipped):
        session.error(f"the wheel lacks files of the package: {missing}")

    session.install(f"{built}[testing,demo]")
    use = tmp / "use"
    use.mkdir()
    shutil.copy(root / "docs" / "examples" / "my_conformance.py", use)
    url = f"sqlite:///{use / 'migrated.db'}"
    with session.chdir(use):
        session.run("python", "-c", _FROM_THE_WHEEL, str(root / "src"))
        session.run("chatkit-stores", "migrate", url)
        revisions = str(session.run("chatkit-stores", "history", silent=True))
        head = revisions.strip().splitlines()[-1].split()[0]
        current = str(session.run("chatkit-stores", "current", url, silent=True))
        if head not in current:
            session.error(f"after migrate, current says {current.strip()!r}, not {head}")
        env = {"DATABASE_URL": f"sqlite:///{use / 'conformance.db'}"}
        session.run("chatkit-stores", "conformance", "my_conformance:make_store", "-q", env=env)
        session.run("chatkit-stores", "demo", "--check", env={"DATABASE_URL": None})
        session.run("python", "-c", _DEMO_SMOKE, env={"DATABASE_URL": None})


def _checkout_files(session: nox.Session, root: Path) -> list[str]:
    """The checkout's tracked and new files that exist, ignored ones left out."""
    listed = session.run(
        "git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
        silent=True, external=True,
    )  # fmt: skip
    return [name for name in str(listed).split("\0") if name and (root / name).is_file()]


_FROM_THE_WHEEL = """
import sys, chatkit_stores
from pathlib import Path
where = Path(chatkit_stores.__file__).resolve()
assert "site-packages" in where.parts, f"not the installed wheel: {where}"
assert Path(sys.argv[1]) not in where.parents, f"imported from the source tree: {where}"
print(f"chatkit_stores {chatkit_stores.__version__} from {where.parent}")
"""

_DEMO_SMOKE = """
import json, re, subprocess, sys, urllib.request
demo = subprocess.Popen(
    [sys.executable, "-m", "chatkit_stores", "demo", "--port", "0"],
    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
)
try:
    found = (re.match(r"Listening on (\\S+)", line) for line in demo.stdout)
    url = next((match[1] for match in found if match), None)
    assert url, "the demo printed no address"
    page = urllib.request.urlopen(url + "/", timeout=30).read().decode()
    assert "chatkit-stores demo" in page and "/static/app.js" in page, page[:200]
    script = urllib.request.urlopen(url + "/static/app.js", timeout=30).read().decode()
    assert "threads.add_user_message" in script, script[:200]
    body = {"content": [{"type": "input_text", "text": "from the wheel"}],
            "attachments": [], "inference_options": {}}
    request = urllib.request.Request(
        url + "/chatkit", method="POST",
        data=json.dumps({"type": "threads.create", "params": {"input": body}}).encode(),
        headers={"Content-Type": "application/json", "X-Demo-User": "wheel"},
    )
    answer = urllib.request.urlopen(request, timeout=60).read().decode()
    assert "You said: from the wheel." in answer, answer[:500]
    print(f"demo from the wheel: page, static file and a streamed reply at {url}")
finally:
    demo.terminate()
    demo.wait(timeout=30)
"""


@nox.session
def citus(session: nox.Session) -> None:
    """The stores on Citus: tests/test_citus.py (migrate, distribute, the conformance suite,
    routing, sealing) and the Row-Level Security tests on distributed tables. Needs
    CHATKIT_STORES_CITUS_URL (a coordinator; .ci/citus starts one) and
    CHATKIT_STORES_POSTGRES_URL."""
    session.install(".[dev]")
    files = ["tests/test_citus.py", "tests/test_row_level_security.py"]
    session.run("pytest", "-q", *files, "-k", "citus or Citus", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict on the package."""
    session.install(".[dev]")
    session.run("ruff", "check", "src", "tests")
    session.run("ruff", "format", "--check", "src", "tests")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (python -m benchmarks): `nox -s bench -- --quick`; set the database URLs."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Soak, pool fairness and cancellation storm (python -m benchmarks.soak): minutes per
    backend; `nox -s soak -- --quick` for under a minute each; set the database URLs."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning (broken link, missing example) fails it."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(session.create_tmp() + "/site"))


PGBOUNCER_URL = "CHATKIT_STORES_PGBOUNCER_URL"


@nox.session(venv_backend="none")
def pgbouncer(session: nox.Session) -> None:
    """The PostgreSQL conformance suite through PgBouncer in transaction mode, from a plain URL.

    Needs CHATKIT_STORES_PGBOUNCER_URL (``.ci/pgbouncer/pgbouncer start DIR`` gives
    postgresql://postgres@127.0.0.1:6432/DB). Runs in nox's own environment (no install: seconds,
    not minutes, in CI after the test command). ``-- --faults`` adds the fault suite's concurrent
    writers (tests/faults/test_connection_faults.py), not run by CI yet: its fault proxy leaves
    reconnecting clients in its listen backlog during the refusal window (see docs/scaling.md).
    """
    url = os.environ.get(PGBOUNCER_URL)
    if not url:
        session.error(f"set {PGBOUNCER_URL} (PgBouncer in transaction mode, see .ci/pgbouncer)")
    env = {"CHATKIT_STORES_POSTGRES_URL": url}
    args = [arg for arg in session.posargs if arg != "--faults"]
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    session.run(*pytest, "tests/test_stores.py::TestPostgresStore", *args, env=env)
    if "--faults" in session.posargs:
        faults = "tests/faults/test_connection_faults.py"
        session.run(*pytest, "-s", faults, "-k", "postgres", *args, env=env)
