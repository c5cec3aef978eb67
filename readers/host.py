"""The reader host: LLRP drivers in a child process (`python -m readers.host`).

On two cores, sllurp's decoding in 40-80 reader threads takes the GIL from the daemon's ingest
thread and throughput collapses past ~50k reads/s. Here the drivers run in their own process
and hand the daemon compact frames over a pipe, so decoding and ingest run in parallel.

The protocol, both ways a frame is a 4-byte little-endian length then a pickle (the two ends are
the same program: the daemon spawns this module with its own interpreter):
- parent -> child (stdin): first `{"readers": [...], "tunables": {...}}`, then `("start", name)`
  (restart a reader whose thread died), `("info", n)` (a fresh snapshot, please) or
  `("stop", timeout_s)`. End of file (the parent died)
  stops everything at once.
- child -> parent (stdout): a list of messages, each one of `("r", name, [(epc, antenna, rssi,
  seen_at, seen_count, tid), ...], {antenna: reads})`, `("s", name, state, reason)`, `("a",
  name, kind, detail)`, `("d", name, {antenna: reads})` (shed here, each reader past its share:
  the parent did not keep up), `("i", {name: (state, running, hung_for, info)})` (every
  SNAPSHOT_S, the parent's sign of life from the child; at each state change; every
  STOP_SNAPSHOT_S while stopping; and before `("q", n)`, the answer to the parent's `("info",
  n)`), `("l", logger, level, text)`, and `("bye",)` last.

Hardware only, like the rest of `readers/`: no business rule, nothing from the daemon.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from readers.base import ReaderState, TagRead
from readers.llrp_wire import Row

if TYPE_CHECKING:
    from readers.llrp import LlrpReader

LENGTH = struct.Struct("<I")
SNAPSHOT_S = 10.0
"""The child's heartbeat: the parent counts it hung past this plus supervise.HANG_MARGIN_S of
silence. Everything else it sends when it happens (states at once, info when asked), so an idle
child wakes its parent this rarely."""
STOP_SNAPSHOT_S = 0.5
"""While stopping, more often: the parent's patience with a slow stop lasts while frames come."""
MAX_PENDING = 2_000
"""Messages waiting for the pipe before the host sheds reads (counted per reader) instead of
growing: the daemon's intake thread stopped reading."""
TUNABLE_MODULES = ("readers.supervise", "readers.llrp", "readers.llrp_session", "readers.host")
"""Modules whose UPPER_CASE numbers the daemon passes on (tests patch them to 0)."""

Message = tuple[Any, ...]


def write_frame(out: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(LENGTH.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next frame, or None at end of file."""
    head = inp.read(LENGTH.size)
    if len(head) < LENGTH.size:
        return None
    (n,) = LENGTH.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def tunables() -> dict[str, dict[str, float]]:
    """This process's values of the patchable constants (what the child must use too)."""
    out: dict[str, dict[str, float]] = {}
    for name in TUNABLE_MODULES:
        mod = sys.modules.get(name)
        if mod is None:
            continue
        out[name] = {k: v for k, v in vars(mod).items()
                     if k.isupper() and isinstance(v, int | float) and not isinstance(v, bool)}
    return out


class _Outbox:
    """What the drivers deliver, coalesced into frames by one writer thread."""

    def __init__(self, out: IO[bytes]) -> None:
        self._q: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._out = out
        # Shed reads per reader and antenna: each count written by that reader's thread only,
        # and what the writer reported of it by the writer only (no lock, no lost update).
        self._dropped: dict[tuple[str, int], int] = {}
        self._reported: dict[tuple[str, int], int] = {}
        # Fair shedding when the daemon falls behind: each reader may have at most its share
        # of MAX_PENDING batches waiting (same pattern: put by its thread, sent by the writer).
        self._put: dict[str, int] = {}
        self._sent: dict[str, int] = {}
        self.share = MAX_PENDING
        self._thread = threading.Thread(target=self._run, name="host-writer", daemon=True)
        self._thread.start()

    def put(self, msg: Message) -> None:
        self._q.put(msg)

    def over_share(self, name: str) -> bool:
        """This reader's next batch would be shed (called on that reader's thread)."""
        return (self._put.get(name, 0) - self._sent.get(name, 0) >= self.share
                or self._q.qsize() > MAX_PENDING)

    def shed(self, name: str, per_antenna: Mapping[int, int]) -> None:
        dropped = self._dropped
        for antenna, n in per_antenna.items():
            key = (name, antenna)
            dropped[key] = dropped.get(key, 0) + n

    def reads(self, name: str, reads: list[TagRead]) -> None:
        per_antenna: dict[int, int] = {}
        for r in reads:
            per_antenna[r.antenna] = per_antenna.get(r.antenna, 0) + 1
        put = self._put.get(name, 0)
        if self.over_share(name):
            self.shed(name, per_antenna)
            return
        self._put[name] = put + 1
        self._q.put(("r", name, [(r.epc, r.antenna, r.rssi_dbm, r.seen_at, r.seen_count, r.tid)
                                 for r in reads], per_antenna))

    def rows(self, name: str, rows: list[Row]) -> None:
        """Rows the fast decoder made (already in the pipe's format)."""
        per_antenna: dict[int, int] = {}
        for r in rows:
            a = r[1]
            per_antenna[a] = per_antenna.get(a, 0) + 1
        if self.over_share(name):
            self.shed(name, per_antenna)
            return
        self._put[name] = self._put.get(name, 0) + 1
        self._q.put(("r", name, rows, per_antenna))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(10.0)

    def _run(self) -> None:
        q = self._q
        while True:
            first = q.get()
            batch = [] if first is None else [first]
            done = first is None
            while not done and len(batch) < 2000:
                try:
                    m = q.get_nowait()
                except queue.Empty:
                    break
                if m is None:
                    done = True
                else:
                    batch.append(m)
            sent = self._sent
            for m in batch:
                if m[0] == "r":
                    sent[m[1]] = sent.get(m[1], 0) + 1
            shed: dict[str, dict[int, int]] = {}
            for key, n in list(self._dropped.items()):
                if n != self._reported.get(key, 0):
                    shed.setdefault(key[0], {})[key[1]] = n - self._reported.get(key, 0)
                    self._reported[key] = n
            batch.extend(("d", name, per_antenna) for name, per_antenna in shed.items())
            if batch:
                try:
                    write_frame(self._out, batch)
                except (BrokenPipeError, OSError):
                    os._exit(0)  # the daemon is gone: nobody to read for
            if done:
                return


class _Sink:
    """The drivers' ReaderSink in the child: everything goes to the parent."""

    def __init__(self, outbox: _Outbox) -> None:
        self._out = outbox
        self.drivers: dict[str, LlrpReader] = {}

    def on_reads(self, reader: str, reads: list[TagRead]) -> None:
        self._out.reads(reader, reads)

    def on_rows(self, reader: str, rows: list[Row]) -> None:
        self._out.rows(reader, rows)

    def would_shed(self, reader: str) -> bool:
        """Asked before a report is decoded: shed it undecoded when over this reader's share."""
        return self._out.over_share(reader)

    def shed(self, reader: str, per_antenna: Mapping[int, int]) -> None:
        self._out.shed(reader, per_antenna)

    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        d = self.drivers.get(reader)
        if d is not None:  # what the parent shows of it is up to date when the state changes
            self._out.put(("i", {reader: _snapshot(d)}))
        self._out.put(("s", reader, state.value, reason))

    def on_anomaly(self, reader: str, kind: str, detail: str) -> None:
        self._out.put(("a", reader, kind, detail))


class _LogForward(logging.Handler):
    """The drivers' log lines, re-emitted by the parent through its own logging."""

    def __init__(self, outbox: _Outbox) -> None:
        super().__init__(logging.DEBUG)
        self._out = outbox

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.put(("l", record.name, record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)


def _snapshot(d: LlrpReader) -> tuple[str, bool, float, dict[str, Any]]:
    return d.state.value, d.running(), d.hung_for(), d.info()


def _apply(values: Mapping[str, Mapping[str, float]]) -> None:
    import importlib

    for name, consts in values.items():
        # This module runs as __main__ (python -m): its own constants are set there.
        mod = sys.modules[__name__] if name == __spec__.name else importlib.import_module(name)
        for k, v in consts.items():
            setattr(mod, k, v)


def main() -> None:
    """Run the readers the parent names until it says stop or goes away."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    setup = read_frame(inp)
    if setup is None:
        return
    from readers.threads import name_os_threads

    name_os_threads()
    outbox = _Outbox(out)
    root = logging.getLogger()
    root.handlers[:] = [_LogForward(outbox)]
    root.setLevel(setup.get("log_level", logging.INFO))
    _apply(setup.get("tunables", {}))
    from readers.llrp import LlrpReader  # after the tunables: they may be read at import
    sink = _Sink(outbox)
    drivers = sink.drivers = {spec["name"]: LlrpReader(spec["name"], spec["host"], spec["options"],
                                        spec["antennas"], sink) for spec in setup["readers"]}
    outbox.share = max(1, MAX_PENDING // max(1, len(drivers)))
    for d in drivers.values():
        d.start()
    stopping = threading.Event()
    stop_timeout = [5.0]

    def commands() -> None:
        while True:
            try:
                cmd = read_frame(inp)
            except Exception:
                cmd = None
            if cmd is None:  # the parent died or closed: stop now, nobody waits for reads
                stop_timeout[0] = 0.5
                stopping.set()
                return
            if cmd[0] == "stop":
                stop_timeout[0] = float(cmd[1])
                stopping.set()
                return
            if cmd[0] == "start" and cmd[1] in drivers:
                drivers[cmd[1]].start()
            elif cmd[0] == "info":  # `rfidd readers` asks: a fresh snapshot, then the answer
                outbox.put(("i", {n: _snapshot(d) for n, d in drivers.items()}))
                outbox.put(("q", cmd[1]))

    threading.Thread(target=commands, name="host-commands", daemon=True).start()
    while not stopping.wait(SNAPSHOT_S):
        outbox.put(("i", {n: _snapshot(d) for n, d in drivers.items()}))
    threads = [threading.Thread(target=d.stop, args=(stop_timeout[0],), daemon=True)
               for d in drivers.values()]
    for t in threads:  # in parallel: 80 polite disconnects must not take 80 timeouts
        t.start()
    deadline = time.monotonic() + stop_timeout[0] + 1.0
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            t.join(max(0.0, min(STOP_SNAPSHOT_S, deadline - time.monotonic())))
            outbox.put(("i", {n: _snapshot(d) for n, d in drivers.items()}))
    outbox.put(("i", {n: _snapshot(d) for n, d in drivers.items()}))
    outbox.put(("bye",))
    outbox.close()
    os._exit(0)  # sllurp's daemon threads may still be in a socket call


if __name__ == "__main__":
    main()
