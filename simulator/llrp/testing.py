"""Helpers for tests, the demo and the benchmark: a sink that records what drivers deliver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from readers.base import ReaderState, TagRead


class RecordingSink:
    """A readers.base.ReaderSink that keeps everything (thread-safe, never blocks for long)."""

    def __init__(self, keep_reads: bool = True) -> None:
        self._lock = threading.Lock()
        self.keep_reads = keep_reads
        self.reads: list[TagRead] = []
        self.read_count: dict[str, int] = {}
        self.states: list[tuple[str, ReaderState, str, float]] = []
        self.anomalies: list[tuple[str, str, str]] = []
        self.last_read_at: dict[str, float] = {}

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        now = time.monotonic()
        with self._lock:
            if self.keep_reads:
                self.reads.extend(reads)
            self.read_count[reader] = self.read_count.get(reader, 0) + len(reads)
            self.last_read_at[reader] = now

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        with self._lock:
            self.states.append((reader, state, reason, time.monotonic()))

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        with self._lock:
            self.anomalies.append((reader, kind, detail))

    def count(self, reader: str | None = None) -> int:
        with self._lock:
            if reader is None:
                return sum(self.read_count.values())
            return self.read_count.get(reader, 0)

    def anomaly_kinds(self, reader: str | None = None) -> set[str]:
        with self._lock:
            return {k for r, k, _ in self.anomalies if reader is None or r == reader}

    def epcs(self, reader: str | None = None) -> set[str]:
        with self._lock:
            return {r.epc for r in self.reads if reader is None or r.reader == reader}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
