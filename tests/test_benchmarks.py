"""The benchmark suite cannot rot: a tiny run on every backend, and the baselines agree with us.

Performance targets are printed by the benchmark itself, never asserted here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from conftest import new_tables_dropped

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level package of the repository
    sys.path.insert(0, str(ROOT))

from benchmarks.__main__ import main  # noqa: E402
from benchmarks.report import OPERATIONS  # noqa: E402
from benchmarks.soak import main as soak_main  # noqa: E402
from benchmarks.variants import VARIANTS, Target, open_variant, ours  # noqa: E402
from benchmarks.workload import make_script, replay  # noqa: E402

PREFIX = "benchtest_"
BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture(scope="module", autouse=True)
def no_tables_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """The benchmarks make tables with prefixes of their own: dropped after this module."""
    with ExitStack() as stack:
        for backend in ("postgres", "mysql"):
            try:
                url = str(request.getfixturevalue(f"{backend}_url"))
            except pytest.skip.Exception:  # that server's tests skip too
                continue
            stack.enter_context(new_tables_dropped(url, PREFIX, "soaktest_"))
        yield


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", f"sqlite:///{tmp_path / 'bench.db'}")
    fixture = "postgres_url" if request.param == "postgresql" else "mysql_url"
    return Target(request.param, request.getfixturevalue(fixture))


async def test_baselines_see_what_our_store_sees(target: Target) -> None:
    admin = ours(target, PREFIX, 1)
    await admin.create_schema()
    await admin.close()
    script = make_script()
    seen = {}
    for name in VARIANTS[target.backend]:
        store = await open_variant(name, target, PREFIX, 2)
        try:  # each variant in its own tenant of the same tables, with the same ids
            seen[name] = await replay(store, script, f"replay-{name}-{id(script)}")
        finally:
            await store.close()
    assert len(seen["ours"]) > 10
    assert "NotFoundError" in seen["ours"]
    for name, transcript in seen.items():
        assert transcript == seen["ours"], f"{name} disagrees with our store"


def test_tiny_run_on_every_backend(
    tmp_path: Path, postgres_url: str, mysql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    chart = tmp_path / "turns.png"
    argv = [
        "--backends=sqlite,postgresql,mysql",
        f"--postgres-url={postgres_url}",
        f"--mysql-url={mysql_url}",
        f"--prefix={PREFIX}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--json={out}",
        f"--chart={chart}",
        "--tiny",
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["backends"]) == set(BACKENDS)
    for backend, data in result["backends"].items():
        assert data["server_version"]
        assert set(data["variants"]) == set(VARIANTS[backend])
        for figures in data["variants"].values():
            assert set(figures["latency"]) == set(OPERATIONS)
            assert all(f["n"] > 0 and f["median_ms"] > 0 for f in figures["latency"].values())
            assert set(figures["throughput"]) == {"1", "2"}
            assert all(f["turns_per_s"] > 0 for f in figures["throughput"].values())
            assert {"latency", "1", "2"} <= set(figures["loop"])
        scaling = result["scaling"][backend]
        assert scaling["items_end_vs_start"] > 0 and scaling["threads_big_vs_small"] > 0
    assert len(result["targets"]) == 6 * len(BACKENDS)  # 2 of them encryption's
    assert result["meta"]["python"] and result["meta"]["date"]
    assert chart.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "turns/s" in printed and ("PASS" in printed or "FAIL" in printed)


def test_soak_runs_briefly_on_every_backend(
    tmp_path: Path, postgres_url: str, mysql_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.json"
    argv = [
        "--backends=sqlite,postgresql,mysql,memory",
        f"--postgres-url={postgres_url}",
        f"--mysql-url={mysql_url}",
        "--prefix=soaktest_",
        f"--json={out}",
        "--quick",
        "--minutes=0.02",
        "--fairness-seconds=0.5",
        "--storm-seconds=1",
        "--storm-tasks=20",
        "--sample-every=150",
        "--tenants=4",
    ]
    assert soak_main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result["backends"]) == [*BACKENDS, "memory"]
    for backend, data in result["backends"].items():
        soak = data["soak"]
        assert soak["calls"] > 150 and not soak["errors"], soak["errors"]
        assert len(soak["samples"]) >= 3 and set(soak["growth_per_10k"]) >= {"rss_mb", "fds"}
        assert soak["end"]["rows"]["items"] > 0 and soak["end"]["latency"]["add_thread_item"]
        if backend == "memory":
            assert "fairness" not in data and "storm" not in data
            continue
        fairness = data["fairness"]
        assert set(fairness) == {"load_thread", "add_thread_item", "after_close"}
        assert all(f["calls"] > 0 for op, f in fairness.items() if op != "after_close")
        storm = data["storm"]
        assert storm["attempted"] > storm["completed"] > 0
        assert storm["acknowledged_adds_missing"] == 0  # acknowledged writes are durable
        assert storm["after_close"]["connections"] in (None, 0)
    printed = capsys.readouterr().out
    assert "Growth per 10,000 calls" in printed and "Cancellation storm" in printed


def test_encryption_benchmark_runs_on_every_backend(
    postgres_url: str,
    mysql_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.encryption import main as encryption_main

    monkeypatch.setenv("CHATKIT_STORES_POSTGRES_URL", postgres_url)
    monkeypatch.setenv("CHATKIT_STORES_MYSQL_URL", mysql_url)
    assert encryption_main(["--tiny", f"--prefix={PREFIX}"]) == 0
    printed = capsys.readouterr().out
    assert "| user_message |" in printed and "| assistant_message |" in printed
    for backend in ("SQLite", "PostgreSQL", "MariaDB/MySQL"):
        assert f"| {backend} | turns/s, 2 clients |" in printed
    assert printed.count("encrypted/ours") == 2 * len(BACKENDS)
