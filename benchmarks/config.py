"""What a benchmark run measures, and how big it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .variants import Target


@dataclass
class Config:
    """Sizes and targets of one run; ``quick()`` gives the small variant."""

    urls: dict[str, str]
    """``sqlite``/``postgresql``/``mysql`` -> a plain database URL; the order is the run order."""
    cache_dir: Path
    """Where the SQLite scaling database is kept between runs."""
    clients: list[int] = field(default_factory=lambda: [1, 10, 50])
    turns: int = 300
    """Turns per throughput measurement, split evenly among the clients (at least 4 each)."""
    repetitions: int = 3
    """Throughput rounds over the variants (round robin, so noise hits every variant alike)."""
    sessions: int = 30
    """Single-client sessions per variant per repetition, alternating variants every session
    (a session: a turn, two history pages, an attachment saved and loaded, a delete)."""
    pool_size: int = 10
    browse_threads: int = 200
    long_thread: int = 1_000
    prefix: str = "bench_"
    workload: bool = True
    """Measure the variants (latency, turns/s, stalls)."""
    scaling: bool = True
    """Measure how our page latency scales (long thread, big table)."""
    scaling_items: int = 100_000
    scaling_threads: int = 1_000_000
    scaling_samples: int = 200
    idle_seconds: float = 1.0
    """How long the loop-lag probe runs alone first, to measure the machine's noise floor."""

    def quick(self) -> Config:
        """The same run at sizes that finish in a few minutes."""
        self.turns, self.repetitions, self.sessions = 100, 3, 20
        self.browse_threads, self.long_thread = 100, 300
        self.scaling_items, self.scaling_threads, self.scaling_samples = 20_000, 100_000, 50
        return self

    def tiny(self) -> Config:
        """Sizes for the test suite: seconds per backend, figures without meaning."""
        self.clients, self.turns, self.repetitions, self.sessions = [1, 2], 4, 1, 2
        self.browse_threads, self.long_thread = 30, 50
        self.scaling_items, self.scaling_threads, self.scaling_samples = 200, 2_000, 3
        self.idle_seconds = 0.05
        return self

    @property
    def backends(self) -> list[str]:
        """The backends to run, in order."""
        return list(self.urls)

    def target(self, backend: str) -> Target:
        """The database of ``backend``."""
        return Target(backend, self.urls[backend])
