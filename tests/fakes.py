"""Test doubles shared by the suite (import as `from fakes import FakeReader`)."""

from __future__ import annotations

import time

from readers.base import ReaderState, TagRead
from rfidd.intake import IngestQueue


class FakeReader:
    """A reader the test drives: reads go straight into the daemon's ingest queue."""

    def __init__(self, name: str, sink: IngestQueue) -> None:
        self.name, self.sink = name, sink
        self._state = ReaderState.OFFLINE
        self.starts = 0
        self.dead = False  # a test sets it: the supervisor thread "died"
        self.late_s = 0.0  # a test sets it: the supervisor thread "hangs"

    def start(self) -> None:
        self.starts += 1
        self.dead = False
        self._state = ReaderState.ONLINE
        self.sink.on_state(self.name, ReaderState.ONLINE, "test")

    def stop(self, timeout: float = 5.0) -> None:
        self._state = ReaderState.OFFLINE

    @property
    def state(self) -> ReaderState:
        return self._state

    def running(self) -> bool:
        return not self.dead

    def hung_for(self) -> float:
        return self.late_s

    def read(self, epcs: list[str], antenna: int = 1, at: float | None = None) -> None:
        now = time.time() if at is None else at
        self.sink.on_reads(self.name, [TagRead(e, self.name, antenna, -50.0, now) for e in epcs])
