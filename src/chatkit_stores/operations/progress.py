"""A progress line on stderr: redrawn in place on a terminal, one line every so often in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

TERMINAL_REFRESH_S = 0.1
LOG_INTERVAL_S = 10.0


class Progress:
    """Counts rows of one step (``label``) towards ``total`` (None when unknown)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self._shown_at = time.monotonic()
        self._drawn = False

    def advance(self, count: int) -> None:
        """Add ``count`` finished rows; redraw when it is time to."""
        self.done += count
        if not self.enabled:
            return
        now = time.monotonic()
        interval = TERMINAL_REFRESH_S if self.terminal else LOG_INTERVAL_S
        if now - self._shown_at >= interval:
            self._shown_at = now
            self._show(final=False)

    def close(self) -> None:
        """Show the final count and end the line."""
        if self.enabled:
            self._show(final=True)

    def text(self) -> str:
        """``label: done/total rows (percent)``, or ``label: done rows`` without a total."""
        if self.total is None:
            return f"{self.label}: {self.done} rows"
        percent = 100 if self.total == 0 else min(100, self.done * 100 // self.total)
        return f"{self.label}: {self.done}/{self.total} rows ({percent}%)"

    def _show(self, *, final: bool) -> None:
        if self.terminal:
            self.stream.write(f"\r{self.text()}\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()
