"""Developer sessions: `nox -s tests`, `nox -s lint`."""

from __future__ import annotations

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
