"""Developer sessions: `nox -s tests`, `nox -s lint`."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
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


@nox.session
def tests_oldest(session: nox.Session) -> None:
    """Run the tests against the oldest openai-chatkit the package claims to support."""
    session.install(".[dev]", f"openai-chatkit=={OLDEST_CHATKIT}")
    session.run("pytest", "-q", *session.posargs)


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
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning (broken link, missing example) fails it."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(session.create_tmp() + "/site"))
