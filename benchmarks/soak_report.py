"""The soak's figures as Markdown."""

from __future__ import annotations

from typing import Any


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def report(result: dict[str, Any]) -> str:
    """The run as Markdown."""
    config = result["config"]
    lines = [f"# Soak: {result['meta']['date']}, commit {result['meta']['git_commit']}", ""]
    lines.append(f"`{result['meta']['command']}`")
    for backend, data in result["backends"].items():
        lines += ["", f"## {backend} ({data['server_version']})"]
        if "soak" in data:
            lines += _soak_report(data["soak"], config)
        if "fairness" in data:
            lines += _fairness_report(data["fairness"], config)
        if "storm" in data:
            lines += _storm_report(data["storm"], config)
    return "\n".join(lines)


def _soak_report(soak: dict[str, Any], config: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"### Soak: {config['tenants']} tenants, {soak['seconds']:.0f} s, pool "
        f"{config['pool_size']}: {soak['calls']:,} calls ({soak['calls_per_s']:,.0f}/s), "
        f"errors: {soak['errors'] or 0}",
        "",
        "| calls | s | RSS MB | objects | greenlets | fds | server conns | threads | items |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    samples = soak["samples"]
    step = max(1, len(samples) // 10)
    for s in [*samples[:-1:step], samples[-1]]:
        lines.append(
            f"| {s['calls']:,} | {s['seconds']:.0f} | {s['rss_mb']:.1f} | {s['objects']:,} | "
            f"{s['greenlets']} | {_n(s['fds'])} | {_n(s['connections'])} | "
            f"{s['rows']['threads']:,} | {s['rows']['items']:,} |"
        )
    g = soak["growth_per_10k"]
    lines += [
        "",
        f"Growth per 10,000 calls (second half): RSS {_signed(g['rss_mb'], 3)} MB, objects "
        f"{_signed(g['objects'], 1)}, greenlets {_signed(g['greenlets'], 2)}, fds "
        f"{_signed(g['fds'], 2)}, server connections {_signed(g['connections'], 2)}.",
        "",
        "| operation | first window p50 / p99 ms | last window p50 / p99 ms |",
        "| --- | ---: | ---: |",
    ]
    start, end = soak["start"], soak["end"]
    for op, first in start["latency"].items():
        last = end["latency"].get(op, {"p50_ms": 0.0, "p99_ms": 0.0})
        lines.append(
            f"| {op} | {first['p50_ms']:.2f} / {first['p99_ms']:.2f} | "
            f"{last['p50_ms']:.2f} / {last['p99_ms']:.2f} |"
        )
    lines += [
        "",
        f"Rows after the first window: {_rows(start['rows'])}; at the end: {_rows(end['rows'])}.",
    ]
    lines.append(f"After close(): {_closed(soak['after_close'])}.")
    return lines


def _fairness_report(fairness: dict[str, Any], config: dict[str, Any]) -> list[str]:
    pool = config["fair_pool"]
    lines = [
        "",
        f"### Fairness: {config['fair_tasks']} tasks back to back, pool {pool['pool_size']} "
        f"(overflow {pool['max_overflow']}, timeout {pool['pool_timeout']} s), "
        f"{config['fairness_seconds']:.0f} s per operation",
        "",
        "| operation | calls | per task min / median / max | tasks with 0 calls | timeouts | "
        "longest call s | |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for op, f in fairness.items():
        if op == "after_close":
            continue
        per = f["per_task"]
        verdict = "PASS" if f["fair"] else "FAIL"
        lines.append(
            f"| {op} | {f['calls']:,} | {per['min']:,} / {per['median']:,.0f} / {per['max']:,} | "
            f"{f['tasks_without_calls']} | {f['timeouts']:,} | {f['longest_call_s']:.2f} | "
            f"{verdict} |"
        )
        if not f["fair"]:
            lines.append(
                f"\nFAIL {op}: {f['tasks_without_calls']} of {config['fair_tasks']} tasks made no "
                f"call, {f['timeouts']:,} timeouts, errors {f['errors'] or 0}"
            )
    return lines


def _storm_report(storm: dict[str, Any], config: dict[str, Any]) -> list[str]:
    low, high = (t * 1000 for t in config["storm_timeouts"])
    during, right_after = storm["during"], storm["right_after"]
    lines = [
        "",
        f"### Cancellation storm: {storm['tasks']} tasks, timeouts {low:g}-{high:g} ms, "
        f"{storm['seconds']:.0f} s",
        "",
        f"- calls: {storm['attempted']:,} attempted, {storm['completed']:,} completed, "
        f"{storm['timed_out']:,} timed out, other errors {storm['errors'] or 0}",
        f"- acknowledged adds missing: {storm['acknowledged_adds_missing']} of "
        f"{storm['acknowledged_adds']:,}; acknowledged deletes with rows back: "
        f"{storm['deleted_threads_with_rows_back']} of {storm['acknowledged_deletes']:,}; "
        f"late title overwrites: {storm['late_title_overwrites']} of {storm['tasks']} threads"
        + "".join(f"; CHECK FAILED {n} x {why}" for why, n in storm["checks_failed"].items()),
        f"- server connections: at most {_n(during.get('connections'))} during (pool "
        f"{config['pool_size']}), {_n(right_after['connections'])} right after, "
        f"{_n(storm['after_checks']['connections'])} after the checks; idle in transaction "
        f"right after: {_n(right_after['idle_in_transaction'])}; statements running right "
        f"after: {_n(right_after['running'])}",
        f"- SQLite write lock free right after: {_yes(storm['sqlite_write_lock_free'])}",
        "- next calls: " + ", ".join(_next(op, call) for op, call in storm["next_call"].items()),
        f"- greenlets: {storm['process_before']['greenlets']} before, "
        f"{storm['process_after']['greenlets']} after, "
        f"{storm['after_close']['greenlets']} after close(); fds "
        f"{_n(storm['process_before']['fds'])} / {_n(storm['process_after']['fds'])} / "
        f"{_n(storm['after_close']['fds'])}",
        f"- log records and loop errors: {storm['log_noise']:,}"
        + "".join(f"\n    - {n:,} x {kind}" for kind, n in storm["log_noise_kinds"].items()),
        f"- after close(): {_closed(storm['after_close'])}",
    ]
    return lines


def _next(operation: str, call: dict[str, Any]) -> str:
    failed = f" FAILED ({call['error']})" if call["error"] else ""
    return f"{operation} {call['ms']:.1f} ms{failed}"


def _signed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def _rows(rows: dict[str, int] | None) -> str:
    if not rows:
        return "-"
    return ", ".join(f"{count:,} {table}" for table, count in rows.items())


def _closed(figures: dict[str, Any]) -> str:
    return (
        f"greenlets {figures['greenlets']}, fds {_n(figures['fds'])}, "
        f"server connections {_n(figures['connections'])}"
    )
