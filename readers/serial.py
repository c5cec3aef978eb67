"""Desk and handheld UHF readers on USB serial (pyserial).

A reader on a USB port comes and goes: the device node disappears when it is unplugged (reads
raise, opening fails) and returns when it is plugged back. `start()` hands the reader to
readers.supervise.Supervisor (reconnect with exponential backoff and jitter, handshake timeout,
watchdog); each connection is a session thread that opens the port, handshakes and reads until an
error or stop. The backoff is cut short when an absent device node reappears, so a replugged
reader resumes within ~0.1 s. Protocols and framing live in readers.serial_protocols.

ASCII readers give no handshake: the input buffer is flushed on open (stale lines from before
the session are dropped on purpose), and a line the reader was half-way through at that moment
arrives truncated; it is kept only if it still matches the pattern and is whole 16-bit words.

Delivery: records are batched per inventory round (binary) or per read chunk (ASCII) and handed
to `sink.on_reads` from the reader thread; decoded records are delivered exactly once, and the
records of a round interrupted by an unplug are flushed before the reader goes offline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import serial

from readers import supervise, tsl
from readers.base import ReaderSink, ReaderState, TagRead
from readers.serial_protocols import (
    INVENTORY_COMMANDS,
    CommandStatus,
    FirmwareVersion,
    Frame,
    FrameDecoder,
    LineParser,
    RecordError,
    RoundEnd,
    TagRecord,
    firmware_version_command,
    inventory_command,
    parse_reply,
    set_work_antenna_command,
)

log = logging.getLogger(__name__)

DEFAULT_LINE_PATTERN = (
    r"^(?P<epc>[0-9A-Fa-f]{8,62})(?:[,; ](?P<rssi>-?\d+(?:\.\d+)?))?"
    r"(?:[,; ](?P<antenna>\d+))?\s*$"
)

# Reconnect policy; module constants so tests (and a supervisor) can patch them.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 5.0  # reopening a local device node is cheap; a POS reader must come back fast
NODE_POLL_S = 0.1  # while the device node is absent, look for it this often and retry at once
BACKOFF_JITTER = 0.25  # up to +25 % of the delay, so readers do not retry in lockstep
READ_TIMEOUT_S = 0.05  # one blocking read; also how fast stop() is noticed
RESPONSE_TIMEOUT_S = 2.0  # binary: a command unanswered this long is lost
MAX_MISSED_RESPONSES = 3  # ...this many in a row means the reader is gone: reconnect
STALL_FLUSH_S = 0.5  # a partial frame that gets no more bytes this long is garbage


class ReaderTimeout(Exception):
    """The reader stopped answering although its port is still open."""


@dataclass(frozen=True)
class ReplugBackoff(supervise.Backoff):
    """The supervisor's backoff, cut short when an absent device node reappears (a replug).

    While the node is missing there is nothing to retry; polling for it (a stat call) lets the
    reader resume right after the replug instead of at the end of a long backoff.
    """

    device: str = ""
    stop: threading.Event | None = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        full = super().delay(attempt, rng)
        if self.stop is None or NODE_POLL_S <= 0 or os.path.exists(self.device):
            return full
        deadline = time.monotonic() + full
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or os.path.exists(self.device):
                break
            self.stop.wait(min(left, NODE_POLL_S))
        return 0.0


@dataclass
class SerialStats:
    """What the driver saw; read by tests, metrics and the status API."""

    reads: int = 0
    batches: int = 0
    sessions: int = 0  # successful connections
    reconnects: int = 0  # successful connections after the first
    connect_failures: int = 0
    rounds: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)
    last_read_at: float | None = None
    last_rx_at: float | None = None
    online_at: float | None = None
    offline_at: float | None = None


SerialFactory = Callable[..., Any]


class SerialReader:
    """A desk or handheld reader on a serial port (readers.base.ReaderDriver)."""

    def __init__(
        self,
        name: str,
        device: str,
        protocol: Literal["binary", "ascii", "tsl"] = "binary",
        baudrate: int = 115200,
        address: int = 0xFF,
        line_pattern: str = DEFAULT_LINE_PATTERN,
        poll_interval_ms: int = 200,
        antennas: Iterable[int] = (1,),
        sink: ReaderSink | None = None,
        *,
        inventory_repeat: int = 1,
        batch_max: int = 500,
        response_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        backoff: supervise.Backoff | None = None,
        serial_factory: SerialFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if protocol not in ("binary", "ascii", "tsl"):
            raise ValueError(f"reader {name}: protocol {protocol!r} is not 'binary', 'ascii' "
                             "or 'tsl'")
        if sink is None:
            raise ValueError(f"reader {name}: a sink is required")
        ants = sorted({int(a) for a in antennas})
        if not ants:
            raise ValueError(f"reader {name}: configure at least one antenna")
        if protocol == "binary" and not all(1 <= a <= 8 for a in ants):
            raise ValueError(f"reader {name}: binary protocol antennas must be 1-8, got {ants}")
        if not 0 <= address <= 255:
            raise ValueError(f"reader {name}: address {address} is not 0-255")
        if not 1 <= inventory_repeat <= 255:
            raise ValueError(f"reader {name}: inventory_repeat {inventory_repeat} is not 1-255")
        self.name = name
        self.device = device
        self.protocol = protocol
        self.baudrate = baudrate
        self.address = address
        self.line_pattern = line_pattern
        self.poll_interval_s = max(0, poll_interval_ms) / 1000.0
        self.antennas = ants
        self.sink = sink
        self.inventory_repeat = inventory_repeat
        self.batch_max = max(1, batch_max)
        self._response_timeout = response_timeout_s
        self._read_timeout = read_timeout_s
        self._backoff_cfg = backoff
        self._supervisor: supervise.Supervisor | None = None
        self._serial_factory: SerialFactory = serial_factory or serial.Serial
        self._clock = clock
        # Validate the pattern now: a bad one is a config error, not a runtime loop.
        LineParser(line_pattern)
        self.stats = SerialStats()
        self.finder = tsl.Finder()  # TSL handhelds: "find this item"
        self._stop = threading.Event()
        self._last_rx_mono = time.monotonic()

    @classmethod
    def from_config(cls, name: str, cfg: Any, sink: ReaderSink, **kwargs: Any) -> SerialReader:
        """Build from an rfidd.config.ReaderConfig of kind 'serial'."""
        opts = cfg.serial
        return cls(
            name,
            cfg.address,
            protocol=opts.protocol,
            baudrate=opts.baudrate,
            address=opts.address,
            line_pattern=opts.line_pattern,
            poll_interval_ms=opts.poll_interval_ms,
            antennas=cfg.antenna_zones().keys(),
            sink=sink,
            **kwargs,
        )

    # --- ReaderDriver ------------------------------------------------------------------------

    @property
    def state(self) -> ReaderState:
        sup = self._supervisor
        return ReaderState.OFFLINE if sup is None else sup.state

    def start(self) -> None:
        """Supervised: reconnect with backoff and jitter, handshake timeout, watchdog (binary)."""
        if self._supervisor is not None and self.is_alive():
            return
        self._stop = threading.Event()
        b = self._backoff_cfg
        backoff = ReplugBackoff(
            initial_s=BACKOFF_INITIAL_S if b is None or b.initial_s is None else b.initial_s,
            maximum_s=BACKOFF_MAX_S if b is None or b.maximum_s is None else b.maximum_s,
            jitter=BACKOFF_JITTER if b is None or b.jitter is None else b.jitter,
            device=self.device,
            stop=self._stop,
        )
        # Binary readers answer every poll, so silence is a fault; an ASCII reader with no tag
        # in front of it is silent by design.
        patience = self._response_timeout_s * (MAX_MISSED_RESPONSES + 1)
        self._supervisor = supervise.Supervisor(
            self.name,
            self.sink,
            self._connect,
            watchdog_s=patience + self.poll_interval_s if self.protocol != "ascii" else None,
            handshake_timeout_s=patience,
            backoff=backoff,
            stop_event=self._stop,
        )
        self._supervisor.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.stop(timeout)

    def find(self, epc: str | None) -> None:
        """TSL handhelds: limit inventory to `epc` and keep its RSSI samples (None: stop)."""
        if self.protocol != "tsl":
            raise ValueError(f"reader {self.name}: find needs a TSL handheld (protocol 'tsl')")
        self.finder.start(epc)

    def info(self) -> dict[str, Any]:
        """What `rfidd readers` shows of a serial reader."""
        return {"kind": "serial", "vendor": "tsl" if self.protocol == "tsl" else None,
                "protocol": self.protocol, "antennas": list(self.antennas),
                "finding": self.finder.epc,
                "anomalies": dict(sorted(dict(self.stats.anomalies).items()))}

    def is_alive(self) -> bool:
        """The supervisor thread runs."""
        return self._supervisor is not None and self._supervisor.is_alive()

    def running(self) -> bool:
        return self.is_alive()

    def hung_for(self) -> float:
        return 0.0 if self._supervisor is None else self._supervisor.hung_for()

    # --- sessions ----------------------------------------------------------------------------

    def _connect(self) -> _Session:
        """Called by the supervisor: open the port (errors are connect failures), start I/O."""
        port = self._open()
        self._last_rx_mono = time.monotonic()
        session = _Session(self, port)
        session.start()
        return session

    def _open(self) -> Any:
        try:
            port = self._serial_factory(
                self.device,
                baudrate=self.baudrate,
                timeout=self._read_timeout_s,
                write_timeout=1.0,
            )
        except OSError:
            self.stats.connect_failures += 1
            raise
        with contextlib.suppress(OSError):
            port.reset_input_buffer()  # bytes from before this session are stale
        return port

    def run_once(self, stop: threading.Event) -> None:
        """One unsupervised session: open, handshake, read until stop (returns) or failure."""
        self._serve(self._open(), stop, lambda: None)

    def _serve(self, port: Any, stop: threading.Event, ready: Callable[[], None]) -> None:
        try:
            if self.protocol == "binary":
                self._session_binary(port, stop, ready)
            elif self.protocol == "tsl":
                try:
                    tsl.session(self, port, stop, ready, self._clock, MAX_MISSED_RESPONSES)
                except tsl.TslTimeout as exc:
                    raise ReaderTimeout(str(exc)) from None
            else:
                self._session_ascii(port, stop, ready)
        finally:
            with contextlib.suppress(OSError):
                port.close()

    @property
    def _read_timeout_s(self) -> float:
        return READ_TIMEOUT_S if self._read_timeout is None else self._read_timeout

    @property
    def _response_timeout_s(self) -> float:
        return RESPONSE_TIMEOUT_S if self._response_timeout is None else self._response_timeout

    def _went_online(self, how: str, ready: Callable[[], None]) -> None:
        self.stats.sessions += 1
        if self.stats.sessions > 1:
            self.stats.reconnects += 1
        self.stats.online_at = self._clock()
        log.debug("reader %s: %s", self.name, how)
        ready()

    def _anomaly(self, kind: str, detail: str) -> None:
        self.stats.anomalies[kind] += 1
        log.debug("reader %s: %s: %s", self.name, kind, detail)
        try:
            self.sink.on_anomaly(self.name, kind, detail)
        except Exception:
            log.exception("reader %s: sink.on_anomaly failed", self.name)

    def _deliver(self, reads: list[TagRead]) -> None:
        if not reads:
            return
        self.stats.reads += len(reads)
        self.stats.batches += 1
        self.stats.last_read_at = self._clock()
        try:
            self.sink.on_reads(self.name, reads)
        except Exception:
            log.exception("reader %s: sink.on_reads failed; %d reads lost", self.name, len(reads))
            self._anomaly("sink_error", f"sink rejected a batch of {len(reads)} reads")

    def _read_chunk(self, port: Any) -> bytes:
        data: bytes = port.read(max(1, port.in_waiting))
        if data:
            try:
                more = port.in_waiting
                if more:
                    data += port.read(more)
            except OSError:
                pass  # keep what arrived; the next read reports the failure
            self.stats.last_rx_at = self._clock()
            self._last_rx_mono = time.monotonic()
        return data

    # --- ASCII -------------------------------------------------------------------------------

    def _session_ascii(
        self, port: Any, stop: threading.Event, ready: Callable[[], None]
    ) -> None:
        parser = LineParser(self.line_pattern, self._anomaly)
        default_antenna = self.antennas[0]
        allowed = set(self.antennas)
        self._went_online(f"listening on {self.device}", ready)
        while not stop.is_set():
            data = self._read_chunk(port)
            if not data:
                continue
            now = self._clock()
            reads = []
            for rec in parser.feed(data):
                ant = rec.antenna if rec.antenna is not None else default_antenna
                if ant not in allowed:
                    self._anomaly(
                        "unknown_antenna", f"EPC {rec.epc} on antenna {ant}, not configured"
                    )
                    continue
                reads.append(TagRead(rec.epc, self.name, ant, rec.rssi_dbm, now))
            self._deliver(reads)

    # --- binary ------------------------------------------------------------------------------

    def _session_binary(
        self, port: Any, stop: threading.Event, ready: Callable[[], None]
    ) -> None:
        decoder = FrameDecoder(self._anomaly)
        pending: list[TagRead] = []
        allowed = set(self.antennas)
        online = False
        antenna_ix = 0
        in_flight = False
        sent_at = 0.0
        next_poll = 0.0
        missed = 0
        last_byte = time.monotonic()
        # Select the work antenna on the first poll (another tool may have left the module on
        # another port) and before every poll when several antennas take turns.
        select_antenna = True
        multi = len(self.antennas) > 1

        port.write(firmware_version_command(self.address))
        sent_at = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if online and not in_flight and now >= next_poll:
                    cmd = b""
                    if multi or select_antenna:
                        select_antenna = False
                        cmd += set_work_antenna_command(self.address, self.antennas[antenna_ix])
                        antenna_ix = (antenna_ix + 1) % len(self.antennas)
                    port.write(cmd + inventory_command(self.address, self.inventory_repeat))
                    in_flight, sent_at = True, now
                elif (in_flight or not online) and now - sent_at > self._response_timeout_s:
                    missed += 1
                    what = "inventory" if online else "firmware version query"
                    if missed >= MAX_MISSED_RESPONSES:
                        raise ReaderTimeout(
                            f"no answer to {missed} {what} command(s) in a row from {self.device}"
                        )
                    self._anomaly("no_response", f"{what} unanswered after "
                                  f"{self._response_timeout_s:.1f} s; resending")
                    if online:
                        in_flight = False
                        next_poll = now
                    else:
                        port.write(firmware_version_command(self.address))
                        sent_at = now
                    continue

                data = self._read_chunk(port)
                if data:
                    last_byte = time.monotonic()
                    frames = decoder.feed(data)
                elif (decoder.pending or decoder.unreported) and (
                    time.monotonic() - last_byte > STALL_FLUSH_S
                ):
                    if decoder.pending:
                        self._anomaly(
                            "truncated", f"{decoder.pending} byte(s) of an unfinished frame"
                        )
                    frames = decoder.drain()
                else:
                    continue
                for frame in frames:
                    if not online:
                        online = True
                        missed = 0
                        self._went_online(f"answering on {self.device}", ready)
                        next_poll = time.monotonic()
                    end = self._on_frame(frame, pending, allowed)
                    if end:
                        self.stats.rounds += 1
                        missed = 0
                        in_flight = False
                        next_poll = max(sent_at + self.poll_interval_s, time.monotonic())
                    if len(pending) >= self.batch_max or (end and pending):
                        self._deliver(pending)
                        pending = []
        finally:
            # Records decoded before an unplug are real reads: deliver them, exactly once.
            self._deliver(pending)

    def _on_frame(self, frame: Frame, pending: list[TagRead], allowed: set[int]) -> bool:
        """Handle one reply; True when it ends an inventory round."""
        try:
            reply = parse_reply(frame)
        except RecordError as exc:
            self._anomaly("bad_record", str(exc))
            return False
        if isinstance(reply, TagRecord):
            if reply.antenna not in allowed:
                self._anomaly(
                    "unknown_antenna", f"EPC {reply.epc} on antenna {reply.antenna}, not configured"
                )
                return False
            pending.append(
                TagRead(reply.epc, self.name, reply.antenna, reply.rssi_dbm, self._clock())
            )
            return False
        if isinstance(reply, RoundEnd):
            return True
        if isinstance(reply, CommandStatus):
            if not reply.ok:
                self._anomaly(
                    "reader_error", f"command 0x{reply.cmd:02X} failed with code 0x{reply.code:02X}"
                )
            return reply.cmd in INVENTORY_COMMANDS
        if isinstance(reply, FirmwareVersion):
            log.info("reader %s: firmware %d.%d", self.name, reply.major, reply.minor)
            return False
        self._anomaly("unexpected_frame", f"cmd 0x{reply.cmd:02X} with {len(reply.data)} bytes")
        return False


class _Session:
    """One open port with its I/O thread, as the supervisor sees it (supervise.Session)."""

    def __init__(self, reader: SerialReader, port: Any) -> None:
        self._reader = reader
        self._port = port
        self._stop = threading.Event()
        self._ready = False
        self._failure: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"serial-{reader.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _wake(self) -> None:
        sup = self._reader._supervisor
        if sup is not None:
            sup.wake()

    def _on_ready(self) -> None:
        self._ready = True
        self._wake()

    def _run(self) -> None:
        r = self._reader
        try:
            r._serve(self._port, self._stop, self._on_ready)
        except (OSError, ReaderTimeout) as exc:  # SerialException is an OSError
            self._failure = _describe(exc)
        except Exception as exc:  # a bug ends this session, never the reader
            log.exception("reader %s: unexpected error", r.name)
            r._anomaly("driver_error", _describe(exc))
            self._failure = f"driver error: {_describe(exc)}"
        else:
            if not self._stop.is_set():
                self._failure = "session ended"
        finally:
            r.stats.offline_at = r._clock()
            self._wake()

    def ready(self) -> bool:
        return self._ready

    def reading(self) -> bool:
        return self._ready  # a serial reader that answers is reading (no ROSpec to start)

    def not_reading_reason(self) -> str:
        return ""

    def alive(self) -> bool:
        return self._thread.is_alive()

    def failure(self) -> str | None:
        return self._failure

    def last_activity(self) -> float:
        return self._reader._last_rx_mono

    def close(self, polite: bool) -> None:
        self._stop.set()
        self._thread.join(5.0)
        if self._thread.is_alive():
            log.warning("reader %s: serial I/O thread did not stop", self._reader.name)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
