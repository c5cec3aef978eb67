"""The contract between reader drivers and the rest of the daemon."""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol


class TagRead(NamedTuple):
    """One tag report from one antenna, normalized across LLRP and serial readers.

    A NamedTuple, not a dataclass: one is built per read (100k+ a second), and a tuple costs
    less than half as much to build (the reader host builds them with `tuple.__new__`, in C).

    `epc` is the EPC bank (without PC bits) as upper-case hex; `seen_at` is seconds since the
    epoch (UTC) of the first sighting in this report; `seen_count` is how many times the reader
    saw the tag in the report window (1 when the reader does not say).
    """

    epc: str
    reader: str
    antenna: int
    rssi_dbm: float | None
    seen_at: float
    seen_count: int = 1
    tid: str | None = None


class ReaderState(enum.Enum):
    """Where a reader is. ONLINE means inventorying (its ROSpec confirmed active), never merely
    connected: a connected reader that does not read is CONNECTED_NOT_READING, which is down."""

    CONNECTING = "connecting"
    CONNECTED_NOT_READING = "connected_not_reading"
    ONLINE = "online"
    OFFLINE = "offline"


class ReaderSink(Protocol):
    """Where a driver delivers what it sees. Implementations must not block for long."""

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        """A batch of reads from one reader (already normalized)."""

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        """The reader's connection state changed; `reason` is for humans (logs, alerts)."""

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        """A tolerated deviation or rejected input (bad frame, checksum...): counted, logged."""


class ReaderDriver(Protocol):
    """A supervised reader: `start` returns at once; `stop` joins within `timeout` seconds."""

    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    @property
    def state(self) -> ReaderState: ...

    def running(self) -> bool:
        """Its supervisor thread runs (the daemon restarts a reader whose thread died)."""
        ...

    def hung_for(self) -> float:
        """Seconds its supervisor is late past its next turn (0 when on time)."""
        ...
