"""How the command writes counts and durations: ``1 attachment``, ``older than 1 day``."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {
    "w": ("week", 7 * 86400),
    "d": ("day", 86400),
    "h": ("hour", 3600),
    "m": ("minute", 60),
    "s": ("second", 1),
}
"""Duration units, largest first: letter -> (name, seconds)."""

NOUNS = {"threads": "thread", "items": "item", "attachments": "attachment"}
"""What one row of each table is called in messages."""

_PART = re.compile(r"(\d+)([wdhms])", re.IGNORECASE)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 thread``, ``2 threads`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def parse_duration(text: str) -> timedelta:
    """``30s``, ``30m``, ``6h``, ``90d``, ``2w`` or a sum such as ``1d12h``, as a timedelta."""
    parts = _PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 30m, 6h, 90d, 2w or 1d12h)")
    return timedelta(seconds=sum(int(n) * UNITS[unit.lower()][1] for n, unit in parts))


def duration(span: timedelta) -> str:
    """A span as people say it, largest units first: ``1 day``, ``1 hour 30 minutes``."""
    seconds = abs(int(span.total_seconds()))
    words = []
    for name, size in UNITS.values():
        count, seconds = divmod(seconds, size)
        if count:
            words.append(plural(count, name))
    return " ".join(words) or "0 seconds"
