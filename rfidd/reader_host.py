"""The daemon's side of the reader host (readers.host): LLRP readers in a child process.

`ReaderHost` spawns `python -m readers.host`, restarts it when it dies, stops it with the daemon
(and the child stops by itself when the daemon dies: its stdin reaches end of file). One intake
thread reads the child's frames and hands reads, states and anomalies to the IngestQueue, so
everything the daemon knows of readers (states, anomalies, TIDs, the reader monitor, metrics in
this process's registry) is as with in-process drivers. `HostedReader` is each reader's
ReaderDriver as the daemon sees it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from readers import host as wire
from readers import supervise
from readers.base import ReaderDriver, ReaderState, TagRead
from rfidd.config import Config
from rfidd.intake import IngestQueue

log = logging.getLogger("rfidd.readers")
REFRESH_S = 0.25
"""A driver snapshot this recent is fresh enough for `rfidd readers` (no question asked)."""
STOP_MAX_S = 20.0
"""At stop, how long past its timeout the child may go on sending the reads it still holds."""


class ReaderHost:
    """One child process running every LLRP reader of the site."""

    def __init__(self, specs: Sequence[dict[str, Any]], sink: IngestQueue) -> None:
        """`specs`: one dict per reader: name, host, options (LLRP options as plain values),
        antennas."""
        self.specs = list(specs)
        self.sink = sink
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._lock = threading.Lock()  # start/stop from the supervisor and the stopping thread
        self._intake: threading.Thread | None = None
        self._stopping = False
        self.last_frame = time.monotonic()
        self.snapshot: dict[str, tuple[str, bool, float, dict[str, Any]]] = {}
        self.states: dict[str, ReaderState] = {s["name"]: ReaderState.OFFLINE for s in specs}
        self.readers = {s["name"]: HostedReader(s["name"], self) for s in specs}
        self._names = {n: n for n in self.states}
        self._asked = threading.Condition()
        self._send_lock = threading.Lock()
        self._question = 0
        self._answered = 0
        self._asked_at = 0.0
        self._fresh_at = -REFRESH_S

    def refresh(self, timeout: float = 2.0) -> None:
        """Have the child send what its drivers know now (`rfidd readers`), waiting for it at
        most `timeout` s; the last snapshot stands if it does not answer."""
        if not self.alive() or time.monotonic() - self._fresh_at < REFRESH_S:
            return  # one question serves a whole `rfidd readers` listing
        with self._asked:
            if self._question > self._answered and \
                    time.monotonic() - self._asked_at < timeout:
                return  # a question unanswered: do not stack waits on a busy child
            self._question += 1
            n = self._question
            self._asked_at = time.monotonic()
        self._send(("info", n))
        with self._asked:
            if self._asked.wait_for(lambda: self._answered >= n or not self.alive(), timeout):
                self._fresh_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the child (again, if it died); idempotent while it runs."""
        with self._lock:
            if self._stopping or self.alive():
                return
            if self._intake is not None:
                self._intake.join(5.0)  # the dead child's last frames first
                self.restarts += 1
                log.error("reader host process died; starting it again (restart %d)",
                          self.restarts)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "readers.host"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, bufsize=1 << 16)
            assert self.proc.stdin is not None
            try:
                wire.write_frame(self.proc.stdin, {
                    "readers": self.specs, "tunables": wire.tunables(),
                    "log_level": logging.getLogger("readers").getEffectiveLevel()})
            except OSError as exc:  # it died at once: the intake sees EOF, the next turn retries
                log.error("reader host process %d: cannot send its readers: %s",
                          self.proc.pid, exc)
            self.last_frame = time.monotonic()
            self.snapshot = {}
            self._intake = threading.Thread(target=self._read, args=(self.proc,),
                                            name="reader-host-intake", daemon=True)
            self._intake.start()
            log.info("reader host process %d runs %d LLRP readers", self.proc.pid,
                     len(self.specs))

    def start_reader(self, name: str) -> None:
        """Restart one reader whose supervisor thread died in the child."""
        if not self.alive():
            self.start()
            return
        self._send(("start", name))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the readers (politely, in parallel) and the child; what they delivered while
        stopping is in the IngestQueue when this returns."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            proc = self.proc
        if proc is None:
            return
        self._send(("stop", timeout))
        started = time.monotonic()
        while proc.poll() is None:  # patient while its last reads still flow in
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
            now = time.monotonic()
            if now - started > timeout + 5.0 and (now - self.last_frame > 5.0
                                                  or now - started > timeout + STOP_MAX_S):
                log.error("reader host process %d did not stop within %.0f s: killed",
                          proc.pid, now - started)
                proc.kill()
                proc.wait(5.0)
        if self._intake is not None:
            self._intake.join(5.0)

    def _send(self, cmd: tuple[Any, ...]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        try:
            with self._send_lock:  # the supervisor, the API and the stopping thread send
                wire.write_frame(proc.stdin, cmd)
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone; the supervisor's next turn restarts it

    def hung_for(self) -> float:
        """Seconds the child is late past its heartbeat snapshot (beyond the margin)."""
        if not self.alive():
            return 0.0
        return max(0.0, time.monotonic() - self.last_frame - wire.SNAPSHOT_S
                   - supervise.HANG_MARGIN_S)

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        """The intake thread: the child's frames into the IngestQueue, until end of file."""
        assert proc.stdout is not None
        inp = proc.stdout
        sink = self.sink
        while True:
            try:
                frame = wire.read_frame(inp)
            except Exception:
                log.exception("reader host: unreadable frame; the child is restarted")
                proc.kill()
                frame = None
            if frame is None:
                break
            self.last_frame = time.monotonic()
            for m in frame:
                try:
                    self._handle(m)
                except Exception:  # one bad message must not stop the intake (and the child)
                    log.exception("reader host: message %.40r failed", m)
        proc.wait()
        with self._asked:  # nobody waits for an answer from a dead child
            self._asked.notify_all()
        for name, state in self.states.items():  # the child's readers went with it
            if state is not ReaderState.OFFLINE:
                self.states[name] = ReaderState.OFFLINE
                sink.on_state(name, ReaderState.OFFLINE,
                              "stopped" if self._stopping else "reader host process died")

    def _handle(self, m: tuple[Any, ...]) -> None:
        """One message of the child (see readers.host for the protocol)."""
        sink = self.sink
        kind = m[0]
        if kind == "r":
            reader = self._names.get(m[1], m[1])  # one string object per reader
            if sink.admits(reader):
                new = tuple.__new__  # TagRead without its Python __new__: this runs per read
                sink.on_reads(reader, [new(TagRead, (e, reader, a, r, s, c, t))
                                       for e, a, r, s, c, t in m[2]], m[3])
            else:  # shed without building what would be dropped
                sink.shed_at_source(reader, m[3])
        elif kind == "s":
            self.states[m[1]] = ReaderState(m[2])
            sink.on_state(m[1], ReaderState(m[2]), m[3])
        elif kind == "a":
            sink.on_anomaly(m[1], m[2], m[3])
        elif kind == "d":
            sink.shed_at_source(m[1], m[2])
        elif kind == "i":
            self.snapshot = {**self.snapshot, **m[1]}
        elif kind == "q":
            self._answered = max(self._answered, m[1])
            with self._asked:
                self._asked.notify_all()
        elif kind == "l":
            logging.getLogger(m[1]).log(m[2], "%s", m[3])


class HostedReader:
    """One reader of the host, as the daemon sees a ReaderDriver."""

    def __init__(self, name: str, host: ReaderHost) -> None:
        self.name = name
        self.host = host

    def start(self) -> None:
        if self.host.alive():
            self.host.start_reader(self.name)
        else:
            self.host.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.host.stop(timeout)

    @property
    def state(self) -> ReaderState:
        return self.host.states.get(self.name, ReaderState.OFFLINE)

    def running(self) -> bool:
        if not self.host.alive():
            return False
        snap = self.host.snapshot.get(self.name)
        return snap is None or snap[1]

    def hung_for(self) -> float:
        snap = self.host.snapshot.get(self.name)
        return max(self.host.hung_for(), snap[2] if snap is not None else 0.0)

    def info(self) -> dict[str, Any]:
        self.host.refresh()
        snap = self.host.snapshot.get(self.name)
        out: dict[str, Any] = dict(snap[3]) if snap is not None else {"kind": "llrp"}
        out["process"] = {"pid": self.host.pid, "restarts": self.host.restarts}
        return out


def build_readers(cfg: Config, sink: IngestQueue,
                  factory: Callable[[str, Any, IngestQueue], ReaderDriver] | None = None,
                  ) -> dict[str, ReaderDriver]:
    """The drivers of the enabled readers: LLRP ones hosted by one ReaderHost (config
    `llrp_process`) or as threads here, serial ones here; `factory` (tests) makes them all."""
    enabled = {n: rc for n, rc in cfg.readers.items() if rc.enabled}
    if factory is not None:
        return {n: factory(n, rc, sink) for n, rc in enabled.items()}
    out: dict[str, ReaderDriver] = {}
    # Only what the configuration set: the reader family's profile fills the rest (a value
    # sent here would count as configured and override it: readers/llrp_profiles.py).
    hosted = [{"name": n, "host": rc.address,
               "options": rc.llrp.model_dump(mode="json", exclude_unset=True),
               "antennas": list(rc.antenna_zones())}
              for n, rc in enabled.items() if rc.kind == "llrp" and cfg.llrp_process]
    if hosted:
        out.update(ReaderHost(hosted, sink).readers)
    for name, rc in enabled.items():
        if name in out:
            continue
        antennas = list(rc.antenna_zones())
        # The drivers' modules only when a reader here needs them: with the LLRP readers in
        # the reader host, the daemon never loads sllurp (nor pyserial without serial readers).
        if rc.kind == "llrp":
            from readers.llrp import LlrpReader

            out[name] = LlrpReader(name, rc.address, rc.llrp, antennas, sink)
            continue
        from readers.serial import SerialReader

        s = rc.serial
        out[name] = SerialReader(
            name, rc.address, protocol=s.protocol, baudrate=s.baudrate, address=s.address,
            line_pattern=s.line_pattern, poll_interval_ms=s.poll_interval_ms,
            antennas=antennas, sink=sink,
        )
    return out
