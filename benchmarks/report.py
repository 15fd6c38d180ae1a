"""Turn a result dict into Markdown tables, PASS/FAIL target lines, JSON and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .variants import LABELS

BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB/MySQL"}
LATENCY_LIMIT = {"sqlite": 1.5, "postgresql": 1.3, "mysql": 1.3}
THROUGHPUT_MIN = 0.8
SCALING_LIMIT = 1.2
STALL_LIMIT_MS = 5.0
ENCRYPTED_LATENCY_LIMIT = 1.15
"""Issue 19: per-call median latency, encrypted / the same store unencrypted, same run."""
ENCRYPTED_THROUGHPUT_MIN = 0.9
"""Issue 19: turns/s at the most clients, encrypted / unencrypted (at most 10% fewer)."""
OPERATIONS = {
    "load_thread": "load_thread",
    "recent_items": "load_thread_items, last 20 (desc)",
    "add_thread_item": "add_thread_item",
    "save_thread": "save_thread",
    "threads_page": "load_threads, page of 20",
    "items_page": "load_thread_items, older page of 20",
    "save_attachment": "save_attachment",
    "load_attachment": "load_attachment",
    "delete_thread": "delete_thread",
}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _title(backend: str, result: dict[str, Any]) -> str:
    return f"{BACKENDS[backend]} {result['backends'][backend]['server_version']}"


def latency_table(result: dict[str, Any], backend: str) -> str:
    """Median and p99 per operation and variant (one client), and the ratio to raw."""
    variants = result["backends"][backend]["variants"]
    others = [name for name in variants if name != "raw"]
    header = ["operation", *(f"{LABELS[v]} median (p99) ms" for v in variants)]
    header += [f"{LABELS[v]} / raw" for v in others]
    rows = []
    for op, label in OPERATIONS.items():
        figures = {name: v["latency"][op] for name, v in variants.items()}
        row = [label, *(f"{f['median_ms']:.2f} ({f['p99_ms']:.2f})" for f in figures.values())]
        base = figures["raw"]["median_ms"]
        rows.append(row + [f"{figures[v]['median_ms'] / base:.2f}x" for v in others])
    return _table(header, rows)


def throughput_table(result: dict[str, Any], backend: str) -> str:
    """Turns per second at each concurrency (median of the rounds), and the ratio to raw."""
    variants = result["backends"][backend]["variants"]
    others = [name for name in variants if name != "raw"]
    clients = list(variants["raw"]["throughput"])
    header = ["clients", *(f"{LABELS[v]} turns/s (p99 turn ms)" for v in variants)]
    header += [f"{LABELS[v]} / raw" for v in others]
    rows = []
    for c in clients:
        figures = {name: v["throughput"][c] for name, v in variants.items()}
        row = [
            c,
            *(f"{f['turns_per_s']:.0f} ({f['turn']['p99_ms']:.0f})" for f in figures.values()),
        ]
        base = figures["raw"]["turns_per_s"]
        rows.append(row + [f"{figures[v]['turns_per_s'] / base:.2f}x" for v in others])
    return _table(header, rows)


def stall_table(result: dict[str, Any]) -> str:
    """The longest event-loop stall per variant: one client, and the most clients."""
    rows = []
    for backend, data in result["backends"].items():
        idle = data["idle_loop"]
        noise = f"{idle['max_ms']:.1f} (p99 {idle['p99_ms']:.1f})"
        rows.append([BACKENDS[backend], "idle loop, no store (noise floor)", noise, "-", "-"])
        for name, v in data["variants"].items():
            most = str(max(int(c) for c in v["throughput"]))
            single, crowd = v["loop"]["latency"], v["loop"][most]
            rows.append(
                [
                    BACKENDS[backend],
                    LABELS[name],
                    f"{single['max_ms']:.1f} (p99 {single['p99_ms']:.1f})",
                    f"{single['gc_max_ms']:.1f}",
                    f"{crowd['max_ms']:.1f} (p99 {crowd['p99_ms']:.1f}) at {most}",
                ]
            )
    header = [
        "backend",
        "variant",
        "worst stall, 1 client, ms",
        "longest GC pause in it, ms",
        "worst stall, most clients, ms",
    ]
    return _table(header, rows)


def encryption_table(result: dict[str, Any]) -> str:
    """What encryption costs: encrypted / unencrypted median latency and turns/s, per backend."""
    rows = []
    for backend, data in result["backends"].items():
        variants = data["variants"]
        if "encrypted" not in variants:
            continue
        plain, sealed = variants["ours"], variants["encrypted"]
        for op, label in OPERATIONS.items():
            a, b = plain["latency"][op]["median_ms"], sealed["latency"][op]["median_ms"]
            rows.append([BACKENDS[backend], label, f"{a:.3f}", f"{b:.3f}", f"{b / a:.2f}x"])
        for clients, figures in plain["throughput"].items():
            a, b = figures["turns_per_s"], sealed["throughput"][clients]["turns_per_s"]
            what = f"turns/s, {clients} clients"
            rows.append([BACKENDS[backend], what, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}x"])
    header = ["backend", "measure (median ms, or turns/s)", "plain", "encrypted", "ratio"]
    return _table(header, rows)


def scaling_table(result: dict[str, Any]) -> str:
    """Page latency of our stores at both ends of a long thread, in a big vs a small table."""
    rows = []
    for backend, data in result["scaling"].items():
        for case, f in data["cases"].items():
            rows.append([BACKENDS[backend], case, f"{f['median_ms']:.2f}", f"{f['p99_ms']:.2f}"])
    return _table(["backend", "page (20 rows)", "median ms", "p99 ms"], rows)


class Targets(list[dict[str, Any]]):
    """The targets evaluated on a run, one dict each (JSON-ready)."""

    def check(self, name: str, value: float, limit: float, at_most: bool, detail: str = "") -> None:
        """Record whether ``value`` is at most (or at least) ``limit``."""
        passed = value <= limit if at_most else value >= limit
        self.append(
            {
                "target": name,
                "value": round(value, 3),
                "limit": limit,
                "passed": passed,
                "detail": detail,
            }
        )

    def compare(
        self,
        backend: str,
        data: dict[str, Any],
        variant: str,
        base: str,
        latency_limit: float,
        throughput_min: float,
    ) -> None:
        """``variant`` / ``base``: median latency of every operation at most ``latency_limit``,
        turns/s at the most clients at least ``throughput_min``."""
        ours, theirs = data["variants"][variant], data["variants"][base]
        ratios = {
            op: ours["latency"][op]["median_ms"] / theirs["latency"][op]["median_ms"]
            for op in OPERATIONS
        }
        worst = max(ratios, key=ratios.__getitem__)
        failing = ", ".join(op for op, r in ratios.items() if r > latency_limit)
        self.check(
            f"{backend}: median latency {variant}/{base} <= {latency_limit}x, every operation",
            ratios[worst],
            latency_limit,
            True,
            f"worst {worst}; over: {failing or 'none'}",
        )
        most = str(max(int(c) for c in theirs["throughput"]))
        rate = ours["throughput"][most]["turns_per_s"] / theirs["throughput"][most]["turns_per_s"]
        self.check(
            f"{backend}: turns/s at {most} clients {variant}/{base} >= {throughput_min}x",
            rate,
            throughput_min,
            False,
        )

    def encryption(self, backend: str, data: dict[str, Any]) -> None:
        """Issue 19's targets: encryption costs at most 15% per call and 10% of turns/s."""
        limits = (ENCRYPTED_LATENCY_LIMIT, ENCRYPTED_THROUGHPUT_MIN)
        self.compare(backend, data, "encrypted", "ours", *limits)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6's targets (and issue 19's for the encrypted variant), evaluated on this run."""
    found = Targets()
    check = found.check
    for backend, data in result["backends"].items():
        ours = data["variants"]["ours"]
        found.compare(backend, data, "ours", "raw", LATENCY_LIMIT[backend], THROUGHPUT_MIN)
        if "encrypted" in data["variants"]:
            found.encryption(backend, data)
        stall = ours["loop"]["latency"]["max_ms"]
        check(
            f"{backend}: worst event-loop stall (ours, 1 client) <= {STALL_LIMIT_MS} ms",
            stall,
            STALL_LIMIT_MS,
            True,
            f"idle loop on this machine: {data['idle_loop']['max_ms']:.1f} ms, longest GC pause"
            f" during ours: {ours['loop']['latency']['gc_max_ms']:.1f} ms",
        )
    for backend, data in result["scaling"].items():
        check(
            f"{backend}: page at end / start of a {data['thread_items']:,}-item thread"
            f" <= {SCALING_LIMIT}x",
            data["items_end_vs_start"],
            SCALING_LIMIT,
            True,
        )
    return found


def target_lines(found: list[dict[str, Any]]) -> str:
    """One PASS/FAIL line per target."""
    lines = []
    for t in found:
        detail = f" ({t['detail']})" if t["detail"] else ""
        lines.append(
            f"{'PASS' if t['passed'] else 'FAIL'}  {t['target']}: {t['value']:.2f}{detail}"
        )
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """Every table of the run, as Markdown."""
    parts = []
    for backend in result["backends"]:
        pool = result["backends"][backend]["pool_size"]
        title = _title(backend, result)
        parts.append(
            f"### {title}: latency per operation, 1 client\n\n{latency_table(result, backend)}"
        )
        parts.append(f"### {title}: turns/s, pool of {pool}\n\n{throughput_table(result, backend)}")
    if result["backends"]:
        parts.append(f"### Event-loop stalls\n\n{stall_table(result)}")
        if any("encrypted" in data["variants"] for data in result["backends"].values()):
            parts.append(f"### Encryption at rest: cost\n\n{encryption_table(result)}")
    if result["scaling"]:
        ratios = "\n".join(
            f"- {BACKENDS[b]}: end/start {d['items_end_vs_start']:.2f}x, "
            f"big/small threads table {d['threads_big_vs_small']:.2f}x"
            for b, d in result["scaling"].items()
        )
        parts.append(f"### Scaling\n\n{scaling_table(result)}\n\n{ratios}")
    parts.append(f"### Targets\n\n```\n{target_lines(result['targets'])}\n```")
    return "\n\n".join(parts)


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def write_chart(result: dict[str, Any], path: Path) -> None:
    """A PNG of turns/s vs concurrent clients, one panel per backend, one line per variant."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "The chart needs matplotlib: pip install 'chatkit-stores[bench]'"
        ) from error
    matplotlib.use("Agg")
    from matplotlib import pyplot

    backends = result["backends"]
    figure, axes = pyplot.subplots(
        1, len(backends), figsize=(4.2 * len(backends), 3.6), squeeze=False
    )
    for axis, (backend, data) in zip(axes[0], backends.items(), strict=True):
        for name, v in data["variants"].items():
            clients = [int(c) for c in v["throughput"]]
            rates = [f["turns_per_s"] for f in v["throughput"].values()]
            axis.plot(clients, rates, marker="o", label=LABELS[name])
        axis.set_xscale("log")
        axis.set_xticks(clients, [str(c) for c in clients])
        axis.set_title(_title(backend, result), fontsize=10)
        axis.set_xlabel("concurrent clients")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("turns/s")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"chatkit-stores turns/s, {result['meta']['date'][:10]}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
