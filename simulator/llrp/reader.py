"""A simulated LLRP reader: a TCP server that a real LLRP client connects to and inventories.

One thread per reader runs a select() loop over its listening socket and its (single) client, so
many readers fit in one process. Faults are requested from any thread and carried out by the
reader's own thread, so the socket state is only ever touched from one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.llrp import codec
from simulator.llrp.codec import MessageType, Status

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 1_048_576
TICK_S = 0.02  # inventory granularity: reads are generated and reports flushed every tick


@dataclass(frozen=True, slots=True)
class FieldTag:
    """A tag in an antenna's field: how likely a read is per attempt and how loud it is."""

    epc: bytes
    read_probability: float = 1.0
    rssi_mean_dbm: float = -55.0
    rssi_stddev_dbm: float = 3.0
    tid: bytes | None = None  # TID bank (chip serial); None: tid_for(epc)


def tid_for(epc: bytes, clone: int = 0) -> bytes:
    """A deterministic 96-bit TID for a tag: class E2, a Monza-like MDID/model, an XTID header,
    and a 48-bit chip serial derived from the EPC (`clone` > 0: another chip, same EPC)."""
    serial = hashlib.sha256(epc + clone.to_bytes(2, "big")).digest()[:6]
    return bytes.fromhex("E2801160") + b"\x20\x00" + serial


TagField = Callable[[int], Sequence[FieldTag]]
"""antenna number -> the tags that antenna can currently read (a snapshot; never mutated)."""


class StaticField:
    """A fixed population per antenna (tests, the single-reader CLI)."""

    def __init__(self, tags: Mapping[int, Sequence[FieldTag]]) -> None:
        self._tags = {ant: tuple(ts) for ant, ts in tags.items()}

    @classmethod
    def of_hex(cls, epcs_by_antenna: Mapping[int, Sequence[str]], read_probability: float = 1.0,
               rssi_mean_dbm: float = -55.0, rssi_stddev_dbm: float = 3.0,
               clones: Sequence[str] = ()) -> StaticField:
        """`clones`: EPCs that a second chip carries too, beside the original (other TID)."""
        out: dict[int, list[FieldTag]] = {}
        for ant, epcs in epcs_by_antenna.items():
            out[ant] = [FieldTag(bytes.fromhex(e), read_probability, rssi_mean_dbm,
                                 rssi_stddev_dbm) for e in epcs]
            out[ant] += [FieldTag(bytes.fromhex(e), read_probability, rssi_mean_dbm,
                                  rssi_stddev_dbm, tid=tid_for(bytes.fromhex(e), clone=1))
                         for e in epcs if e in clones]
        return cls(out)

    def __call__(self, antenna: int) -> Sequence[FieldTag]:
        return self._tags.get(antenna, ())


@dataclass
class ReaderQuirks:
    """Standing deviations from the standard that real readers show (not one-off faults).

    Each has a `--quirks` name (QUIRKS below) for `rfidd-sim` and the scenario files."""

    error_on_enable_events: bool = False  # answer ENABLE_EVENTS_AND_REPORTS with ERROR_MESSAGE
    reject_spec_id_zero: bool = False  # DELETE_ROSPEC(0) / DELETE_ACCESSSPEC(0) fail
    omit_optional_fields: bool = False  # reports carry only the EPC, whatever was asked
    # An Immediate-trigger ROSpec stays Inactive after ENABLE_ROSPEC until START_ROSPEC.
    needs_start_rospec: bool = False
    # START_ROSPEC of an already active ROSpec is refused ("already active").
    start_active_refused: bool = False
    # GET_ROSPECS answered with ERROR_MESSAGE (not supported).
    no_get_rospecs: bool = False
    # Only antenna 1 reports unless each antenna has its AntennaConfiguration in the ROSpec.
    antenna1_unless_configured: bool = False
    # C1G2RFControl.ModeIndex is taken as a position in the mode table, not an identifier.
    mode_index_is_position: bool = False
    # Capabilities and reports carry a vendor parameter sllurp cannot decode (Zebra FX).
    undecodable_vendor_params: bool = False
    # Buffered reads are reported on ENABLE_ROSPEC, before its response.
    reports_before_enable_response: bool = False
    # The inventory engine restarts after this many seconds of inventory: the ROSpec is lost,
    # the LLRP connection and its keepalives go on (0: never).
    loses_rospec_after_s: float = 0.0
    # No access operations (many fixed readers' LLRP lacks them): ADD_ACCESSSPEC refused, so
    # reads carry no TID.
    no_tid_read: bool = False

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ReaderQuirks:
        """From `--quirks` names; an unknown name is an error listing the known ones."""
        values: dict[str, Any] = {}
        for name in names:
            key, _, arg = name.strip().partition("=")
            field_name = QUIRKS.get(key)
            if field_name is None:
                raise ValueError(f"unknown quirk {key!r}; known: {', '.join(sorted(QUIRKS))}")
            values[field_name] = float(arg or 2.0) if field_name == "loses_rospec_after_s" \
                else True
        return cls(**values)


# `--quirks` name -> ReaderQuirks field (loses-rospec takes "=SECONDS", default 2).
QUIRKS: dict[str, str] = {
    "error-on-enable-events": "error_on_enable_events",
    "reject-spec-id-zero": "reject_spec_id_zero",
    "omit-optional-fields": "omit_optional_fields",
    "needs-start-rospec": "needs_start_rospec",
    "start-active-refused": "start_active_refused",
    "no-get-rospecs": "no_get_rospecs",
    "antenna1-unless-configured": "antenna1_unless_configured",
    "mode-index-is-position": "mode_index_is_position",
    "undecodable-vendor-params": "undecodable_vendor_params",
    "reports-before-enable-response": "reports_before_enable_response",
    "loses-rospec": "loses_rospec_after_s",
    "no-tid-read": "no_tid_read",
}

IMPINJ_PEN = 25882
MOTOROLA_PEN = 161
# What the simulated reader can claim to be (`identity` presets): manufacturer, model, firmware.
IDENTITIES: dict[str, codec.ReaderIdentity] = {
    "generic": codec.ReaderIdentity(),
    "impinj": codec.ReaderIdentity(manufacturer=IMPINJ_PEN, model=2001002,
                                   firmware="8.0.0.240 (simulated Speedway R420)"),
    "zebra": codec.ReaderIdentity(manufacturer=MOTOROLA_PEN, model=7500,
                                  firmware="3.10.30 (simulated FX7500)"),
}


@dataclass
class ReaderStats:
    """Counters a test or benchmark compares with what the client received."""

    connections: int = 0
    refused: int = 0
    reports_sent: int = 0
    tags_reported: int = 0  # TagReportData entries
    reads_reported: int = 0  # sum of TagSeenCount
    keepalives_sent: int = 0
    keepalive_acks: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    bad_frames: int = 0
    rospecs_lost: int = 0
    rospec_events: int = 0  # ROSpecEvent notifications sent
    impinj_extensions: bool = False  # IMPINJ_ENABLE_EXTENSIONS accepted on this connection
    vendor_rospec_parameters: int = 0  # custom parameters in the last ROSpec added
    antennas_configured: list[int] = field(default_factory=list)  # in the last ROSpec added
    mode_selected: int | None = None  # ModeIdentifier the last ROSpec selected
    rospec: codec.RoSpec | None = None  # the last ROSpec added, as parsed (what was asked)
    keepalive_ms: int | None = None  # the keepalive period the client last asked for


@dataclass
class _Conn:
    sock: socket.socket
    peer: str
    buf: bytearray = field(default_factory=bytearray)
    silent: bool = False
    keepalive_ms: int = 0
    next_keepalive: float = 0.0
    rospec_events: bool = False  # the client asked for ROSpecEvent notifications


class SimulatedReader:
    """An LLRP 1.0.1 reader on (host, port); port 0 binds an ephemeral port (see `.port`)."""

    def __init__(
        self,
        name: str,
        tag_field: TagField,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        antennas: Sequence[int] = (1,),
        reads_per_s: float = 1000.0,
        identity: codec.ReaderIdentity | None = None,
        quirks: ReaderQuirks | None = None,
        buffered: Sequence[FieldTag] = (),
        seed: int = 0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if reads_per_s < 0:
            raise ValueError(f"reader {name}: reads_per_s must be >= 0, got {reads_per_s}")
        self.name = name
        self.host = host
        self.requested_port = port
        self.antennas = sorted(set(antennas))
        if not self.antennas or min(self.antennas) < 1:
            raise ValueError(f"reader {name}: antennas must be numbers >= 1, got {antennas}")
        self.reads_per_s = reads_per_s
        self.identity = identity or codec.ReaderIdentity(max_antennas=max(4, *self.antennas))
        self.quirks = quirks or ReaderQuirks()
        # Reads the reader took while no client was connected (reported on the next enable).
        self.buffered = list(buffered)
        # A dead radio: START_ROSPEC is accepted but the ROSpec never becomes active.
        self.refuse_start = False
        self.stats = ReaderStats()
        self._field = tag_field
        self._rng = random.Random(seed)
        self._max_frame = max_frame_bytes
        self._clock = clock
        self._wall = wall_clock
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._port = 0
        self._conn: _Conn | None = None
        self._msg_id = 0
        # inventory state
        self._rospecs: dict[int, codec.RoSpec] = {}
        self._enabled: set[int] = set()
        self._active: int | None = None
        self._pending: dict[tuple[bytes, int, bytes | None], codec.TagObservation] = {}
        self._access: dict[int, tuple[codec.AccessRead, bool]] = {}  # id -> (read, enabled)
        self._pending_since = 0.0
        self._ai_started = 0.0
        self._activated_at = 0.0
        self._budget = 0.0
        self._cursor: dict[int, int] = {}
        self._ant_turn = 0
        self._last_tick = 0.0
        self._held = False
        # faults
        self._silent_until = 0.0
        self._reboot_until = 0.0
        self._occupied_until = 0.0
        self._error_next: dict[int, int] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        """The bound port (known as soon as `start` returns)."""
        return self._port

    def start(self) -> None:
        """Bind now (errors raise here, in the caller) and serve on a daemon thread."""
        self._listener = self._bind(self.requested_port)
        self._port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"sim-llrp-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_conn()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> SimulatedReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def inventorying(self) -> bool:
        return self._active is not None

    # ---------------------------------------------------------------- fault API (any thread)
    def drop_connection(self) -> None:
        """Close the client's socket without a word (cable pulled, reader crashed)."""
        self._commands.put(("drop", None))

    def go_silent(self, duration_s: float | None = None) -> None:
        """Stop talking: no keepalives, no reports, no answers. None: the current connection only;
        otherwise for `duration_s` seconds, new connections included (hung firmware)."""
        self._commands.put(("silent", duration_s))

    def send_garbage(self, kind: str = "random", size: int = 64) -> None:
        """Write bytes that are not LLRP: 'random', or 'huge_frame' (a header claiming ~2 GB)."""
        if kind not in ("random", "huge_frame"):
            raise ValueError(f"garbage kind must be 'random' or 'huge_frame', got {kind!r}")
        self._commands.put(("garbage", (kind, size)))

    def answer_with_error(self, message_name: str, code: int = Status.UNSUPPORTED_MESSAGE) -> None:
        """Answer the next `message_name` request (e.g. 'ADD_ROSPEC') with ERROR_MESSAGE."""
        msg_type = getattr(MessageType, message_name.upper(), None)
        if not isinstance(msg_type, int):
            raise ValueError(f"unknown LLRP message name {message_name!r}")
        self._commands.put(("error_next", (msg_type, code)))

    def occupy(self, duration_s: float) -> None:
        """Another client holds the reader for `duration_s`: ours is dropped and every connect
        is refused with ConnectionAttemptEvent 'a client initiated connection already exists'."""
        self._commands.put(("occupy", duration_s))

    def reboot(self, duration_s: float) -> None:
        """Drop the client and refuse TCP connects (port closed) for `duration_s` seconds."""
        self._commands.put(("reboot", duration_s))

    def hold(self, held: bool = True) -> None:
        """Pause (or resume) read generation; pending reads are still reported."""
        self._commands.put(("hold", held))

    # ---------------------------------------------------------------- thread
    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        self._last_tick = self._clock()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a bug must not take the whole site down: drop the client
                log.exception("simulated reader %s: unexpected error, dropping client", self.name)
                self._close_conn()
                time.sleep(TICK_S)

    def _step(self) -> None:
        now = self._clock()
        self._do_commands(now)
        if self._listener is None and now >= self._reboot_until and self._reboot_until:
            try:
                self._listener = self._bind(self._port)
                self._reboot_until = 0.0
                log.info("simulated reader %s: back after reboot on port %d", self.name, self._port)
            except OSError as exc:
                log.warning("simulated reader %s: cannot rebind port %d: %s",
                            self.name, self._port, exc)
        rlist: list[socket.socket] = []
        if self._listener is not None:
            rlist.append(self._listener)
        if self._conn is not None:
            rlist.append(self._conn.sock)
        timeout = TICK_S if (self._active is not None or self._conn is None) else 0.1
        if not rlist:
            self._stop.wait(TICK_S)
            return
        readable, _, _ = select.select(rlist, [], [], timeout)
        if self._listener is not None and self._listener in readable:
            self._accept()
        conn = self._conn
        if conn is not None and conn.sock in readable:
            self._receive(conn)
        now = self._clock()
        if self._conn is not None:
            self._inventory(now)
            self._keepalive(now)

    def _do_commands(self, now: float) -> None:
        while True:
            try:
                cmd, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            log.info("simulated reader %s: fault %s %s", self.name, cmd, arg)
            if cmd == "drop":
                self._close_conn()
            elif cmd == "silent":
                if arg is None:
                    if self._conn is not None:
                        self._conn.silent = True
                else:
                    self._silent_until = now + float(arg)
            elif cmd == "garbage":
                kind, size = arg
                if kind == "huge_frame":
                    data = codec.HEADER.pack((1 << 10) | MessageType.RO_ACCESS_REPORT,
                                             0x7FFFFFF0, self._next_id()) + bytes(size)
                else:
                    data = self._rng.randbytes(size)
                self._send(data)
            elif cmd == "error_next":
                msg_type, code = arg
                self._error_next[msg_type] = code
            elif cmd == "occupy":
                self._occupied_until = now + float(arg)
                self._close_conn()
            elif cmd == "reboot":
                self._close_conn()
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                self._reboot_until = now + max(float(arg), 1e-3)
            elif cmd == "hold":
                self._held = bool(arg)
            elif cmd == "lose_rospec":
                self._forget_rospecs()
            elif cmd == "stop_rospec" and self._active is not None:
                self._deactivate(self._active, now)

    def _next_id(self) -> int:
        self._msg_id = (self._msg_id + 1) & 0xFFFFFFFF
        return self._msg_id

    def _micros(self) -> int:
        return int(self._wall() * 1_000_000)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("simulated reader %s: accept failed: %s", self.name, exc)
            return
        sock.setblocking(True)
        sock.settimeout(5.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = f"{addr[0]}:{addr[1]}"
        if self._conn is not None or self._clock() < self._occupied_until:
            self.stats.refused += 1
            log.info("simulated reader %s: refusing %s, a client connection exists", self.name,
                     peer)
            with contextlib.suppress(OSError):
                sock.sendall(codec.reader_event_connection(
                    self._next_id(), self._micros(),
                    codec.ConnectionStatus.CLIENT_INITIATED_EXISTS))
            sock.close()
            return
        self.stats.connections += 1
        self._conn = _Conn(sock, peer, silent=self._clock() < self._silent_until)
        self._reset_session()
        log.info("simulated reader %s: client %s connected", self.name, peer)
        self._send(codec.reader_event_connection(self._next_id(), self._micros(),
                                                 codec.ConnectionStatus.SUCCESS))

    def _reset_session(self) -> None:
        """A new connection starts from a clean reader: no specs, no pending reads."""
        self._rospecs.clear()
        self._enabled.clear()
        self._access.clear()
        self._active = None
        self._pending.clear()
        self._budget = 0.0

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        self._active = None
        self._pending.clear()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def _is_silent(self) -> bool:
        conn = self._conn
        return conn is None or conn.silent or self._clock() < self._silent_until

    def _send(self, data: bytes) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.sock.sendall(data)
            return True
        except OSError as exc:
            log.info("simulated reader %s: send to %s failed (%s), dropping", self.name,
                     conn.peer, exc)
            self._close_conn()
            return False

    # ---------------------------------------------------------------- requests
    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            log.info("simulated reader %s: client %s closed", self.name, conn.peer)
            self._close_conn()
            return
        if self._is_silent():
            return  # a hung reader reads nothing
        conn.buf += data
        while len(conn.buf) >= codec.HEADER_LEN:
            hdr = codec.decode_header(conn.buf)
            if hdr.length < codec.HEADER_LEN or hdr.length > self._max_frame:
                self.stats.bad_frames += 1
                log.warning("simulated reader %s: frame of %d bytes from %s, closing", self.name,
                            hdr.length, conn.peer)
                self._close_conn()
                return
            if len(conn.buf) < hdr.length:
                return
            body = bytes(conn.buf[codec.HEADER_LEN:hdr.length])
            del conn.buf[:hdr.length]
            self._handle(hdr, body)
            if self._conn is not conn:
                return

    def _handle(self, hdr: codec.Header, body: bytes) -> None:
        name = hdr.name
        self.stats.requests[name] = self.stats.requests.get(name, 0) + 1
        t = hdr.msg_type
        if hdr.version != codec.LLRP_VERSION:
            self._send(codec.error_message(hdr.msg_id, Status.UNSUPPORTED_VERSION,
                                           f"LLRP version {hdr.version} not supported"))
            return
        if t in self._error_next:
            code = self._error_next.pop(t)
            self._send(codec.error_message(hdr.msg_id, code, f"{name} refused (simulated)"))
            return
        if t == MessageType.KEEPALIVE_ACK:
            self.stats.keepalive_acks += 1
            return
        if t == MessageType.CUSTOM_MESSAGE:
            self._custom(hdr, body)
            return
        if t == MessageType.ENABLE_EVENTS_AND_REPORTS:
            if self.quirks.error_on_enable_events:
                self._send(codec.error_message(hdr.msg_id, Status.UNSUPPORTED_MESSAGE,
                                               "ENABLE_EVENTS_AND_REPORTS not supported"))
            return
        try:
            self._answer(hdr, body)
        except codec.LlrpDecodeError as exc:
            log.info("simulated reader %s: bad %s: %s", self.name, name, exc)
            resp = codec.RESPONSE_OF.get(t, MessageType.ERROR_MESSAGE)
            self._send(codec.status_response(resp, hdr.msg_id, Status.PARAMETER_ERROR, str(exc)))

    def _answer(self, hdr: codec.Header, body: bytes) -> None:
        t, mid = hdr.msg_type, hdr.msg_id
        resp = codec.RESPONSE_OF.get(t)
        if t == MessageType.GET_READER_CAPABILITIES:
            extra = b""
            if self.quirks.undecodable_vendor_params:  # MotoGeneralCapabilities, truncated
                extra = codec.custom_parameter(MOTOROLA_PEN, 1, b"\x01")
            self._send(codec.capabilities_response(mid, self.identity, extra))
        elif t == MessageType.GET_ROSPECS:
            if self.quirks.no_get_rospecs:
                self._send(codec.error_message(mid, Status.UNSUPPORTED_MESSAGE,
                                               "GET_ROSPECS not supported"))
                return
            self._send(codec.get_rospecs_response(mid, [
                (sid, spec.priority, 2 if sid == self._active else
                 1 if sid in self._enabled else 0)
                for sid, spec in sorted(self._rospecs.items())]))
        elif t == MessageType.GET_READER_CONFIG:
            ka = self._conn.keepalive_ms if self._conn else 0
            self._send(codec.config_response(mid, self.identity, self.antennas, ka))
        elif t == MessageType.SET_READER_CONFIG:
            ka_ms = codec.parse_keepalive_ms(body)
            events = codec.parse_rospec_events(body)
            if events is not None and self._conn is not None:
                self._conn.rospec_events = events
            if ka_ms is not None and self._conn is not None:
                self.stats.keepalive_ms = ka_ms
                self._conn.keepalive_ms = ka_ms
                self._conn.next_keepalive = self._clock() + ka_ms / 1000.0
            self._send(codec.status_response(MessageType.SET_READER_CONFIG_RESPONSE, mid))
        elif t == MessageType.CLOSE_CONNECTION:
            self._send(codec.status_response(MessageType.CLOSE_CONNECTION_RESPONSE, mid))
            self._close_conn()
        elif t == MessageType.ADD_ROSPEC:
            spec = codec.parse_add_rospec(body)
            if spec.rospec_id == 0:
                self._send(codec.status_response(resp or 0, mid, Status.FIELD_ERROR,
                                                 "ROSpecID 0 is reserved"))
            elif spec.rospec_id in self._rospecs:
                self._send(codec.status_response(resp or 0, mid, Status.A_INVALID,
                                                 f"ROSpec {spec.rospec_id} already exists"))
            elif (problem := self._mode_problem(spec)) is not None:
                self._send(codec.status_response(resp or 0, mid, Status.FIELD_ERROR, problem))
            else:
                self._rospecs[spec.rospec_id] = spec
                self.stats.vendor_rospec_parameters = spec.custom_parameters
                self.stats.antennas_configured = list(spec.configured_antennas)
                self.stats.rospec = spec
                self._send(codec.status_response(resp or 0, mid))
        elif t in (MessageType.DELETE_ROSPEC, MessageType.ENABLE_ROSPEC,
                   MessageType.DISABLE_ROSPEC, MessageType.START_ROSPEC, MessageType.STOP_ROSPEC):
            self._rospec_op(t, codec.u32_field(body, hdr.name), mid)
        elif t == MessageType.ADD_ACCESSSPEC:
            read = codec.parse_add_accessspec(body)
            if self.quirks.no_tid_read:
                self._send(codec.status_response(resp or 0, mid, Status.UNSUPPORTED_MESSAGE,
                                                 "access operations not supported"))
            elif read is None or read.access_spec_id == 0 or read.access_spec_id in self._access:
                self._send(codec.status_response(resp or 0, mid, Status.A_INVALID,
                                                 "only one C1G2Read AccessSpec (id > 0, new) "
                                                 "is supported"))
            else:
                self._access[read.access_spec_id] = (read, False)
                self._send(codec.status_response(resp or 0, mid))
        elif t in (MessageType.ENABLE_ACCESSSPEC, MessageType.DISABLE_ACCESSSPEC):
            spec_id = codec.u32_field(body, hdr.name)
            if spec_id not in self._access:
                self._send(codec.status_response(resp or 0, mid, Status.A_INVALID,
                                                 f"no AccessSpec {spec_id}"))
            else:
                self._access[spec_id] = (self._access[spec_id][0],
                                         t == MessageType.ENABLE_ACCESSSPEC)
                self._send(codec.status_response(resp or 0, mid))
        elif t == MessageType.DELETE_ACCESSSPEC:
            spec_id = codec.u32_field(body, hdr.name)
            if spec_id == 0 and self.quirks.reject_spec_id_zero:
                self._send(codec.status_response(MessageType.DELETE_ACCESSSPEC_RESPONSE, mid,
                                                 Status.A_INVALID, "AccessSpecID 0 not supported"))
            elif spec_id == 0 or spec_id in self._access:
                if spec_id == 0:
                    self._access.clear()
                else:
                    del self._access[spec_id]
                self._send(codec.status_response(MessageType.DELETE_ACCESSSPEC_RESPONSE, mid))
            else:
                self._send(codec.status_response(MessageType.DELETE_ACCESSSPEC_RESPONSE, mid,
                                                 Status.A_INVALID, f"no AccessSpec {spec_id}"))
        elif t == MessageType.GET_REPORT:
            self._flush(self._clock())
        elif resp is not None:  # access specs and the like: a reader without access support
            self._send(codec.status_response(resp, mid, Status.A_INVALID,
                                             f"{hdr.name} not supported by this reader"))
        else:
            self._send(codec.error_message(mid, Status.UNSUPPORTED_MESSAGE,
                                           f"unsupported message {hdr.name}"))

    def _rospec_op(self, t: int, spec_id: int, mid: int) -> None:
        resp = codec.RESPONSE_OF[t]
        if spec_id == 0 and t == MessageType.DELETE_ROSPEC and self.quirks.reject_spec_id_zero:
            self._send(codec.status_response(resp, mid, Status.A_INVALID,
                                             "ROSpecID 0 not supported"))
            return
        targets = list(self._rospecs) if spec_id == 0 else [spec_id]
        if spec_id != 0 and spec_id not in self._rospecs:
            self._send(codec.status_response(resp, mid, Status.A_INVALID,
                                             f"no ROSpec {spec_id}"))
            return
        if t == MessageType.START_ROSPEC and self._active == spec_id and \
                self.quirks.start_active_refused:
            self._send(codec.status_response(resp, mid, Status.A_INVALID,
                                             f"ROSpec {spec_id} is already active"))
            return
        if spec_id == 0 and t in (MessageType.START_ROSPEC, MessageType.STOP_ROSPEC):
            self._send(codec.status_response(resp, mid, Status.FIELD_ERROR,
                                             "ROSpecID 0 is reserved"))
            return
        now = self._clock()
        if t == MessageType.ENABLE_ROSPEC and self.quirks.reports_before_enable_response:
            self._report_buffered(spec_id)  # before the answer: what this quirk is about
        # Answer first: a client drops reports that arrive before the ENABLE response.
        if t == MessageType.START_ROSPEC and spec_id not in self._enabled:
            self._send(codec.status_response(resp, mid, Status.A_INVALID,
                                             f"ROSpec {spec_id} is not enabled"))
            return
        self._send(codec.status_response(resp, mid))
        for sid in targets:
            if t == MessageType.DELETE_ROSPEC:
                self._deactivate(sid, now)
                self._rospecs.pop(sid, None)
                self._enabled.discard(sid)
            elif t == MessageType.DISABLE_ROSPEC:
                self._deactivate(sid, now)
                self._enabled.discard(sid)
            elif t == MessageType.STOP_ROSPEC:
                self._deactivate(sid, now)
            elif t == MessageType.ENABLE_ROSPEC:
                self._enabled.add(sid)
                if self._rospecs[sid].start_trigger in (1, 2) and self._active is None \
                        and not self.quirks.needs_start_rospec:
                    self._activate(sid, now)
            elif t == MessageType.START_ROSPEC and self._active is None \
                    and not self.refuse_start:
                self._activate(sid, now)

    def _mode_problem(self, spec: codec.RoSpec) -> str | None:
        """Why the ROSpec's ModeIndex is refused, or None (and the mode it selects is noted)."""
        if spec.mode_index is None:
            self.stats.mode_selected = None
            return None
        ids = [m[0] for m in codec.RF_MODES]
        if self.quirks.mode_index_is_position:
            if spec.mode_index >= len(ids):
                return (f"C1G2RFControl ModeIndex {spec.mode_index} out of range "
                        f"(0-{len(ids) - 1})")
            self.stats.mode_selected = ids[spec.mode_index]
        elif spec.mode_index not in ids:
            return f"C1G2RFControl ModeIndex {spec.mode_index}: no such mode identifier"
        else:
            self.stats.mode_selected = spec.mode_index
        return None

    def _custom(self, hdr: codec.Header, body: bytes) -> None:
        """Vendor messages: only IMPINJ_ENABLE_EXTENSIONS, and only if we claim to be Impinj."""
        vendor, subtype = struct.unpack_from("!IB", body) if len(body) >= 5 else (0, 0)
        if vendor == IMPINJ_PEN and subtype == 21 and self.identity.manufacturer == IMPINJ_PEN:
            self.stats.impinj_extensions = True
            self._send(codec.custom_message(hdr.msg_id, IMPINJ_PEN, 22, codec.llrp_status()))
            return
        self._send(codec.error_message(hdr.msg_id, Status.UNSUPPORTED_MESSAGE,
                                       f"custom message of vendor {vendor} not supported"))

    def _report_buffered(self, sid: int) -> None:
        if not self.buffered or sid not in self._rospecs:
            return
        micros = self._micros()
        tags = [codec.TagObservation(t.epc, self.antennas[0], int(t.rssi_mean_dbm), micros,
                                     micros) for t in self.buffered]
        self.buffered = []
        if self._send(codec.ro_access_report(self._next_id(), tags, self._rospecs[sid].selector,
                                             sid)):
            self.stats.reports_sent += 1
            self.stats.tags_reported += len(tags)
            self.stats.reads_reported += len(tags)

    def lose_rospec(self) -> None:
        """The inventory engine restarts: every ROSpec is forgotten, the connection stays."""
        self._commands.put(("lose_rospec", None))

    def stop_rospec(self) -> None:
        """The reader stops its ROSpec on its own (another client's STOP, a radio fault)."""
        self._commands.put(("stop_rospec", None))

    def _rospec_event(self, event_type: int, sid: int) -> None:
        if self._conn is not None and self._conn.rospec_events:
            self.stats.rospec_events += 1
            self._send(codec.rospec_event(self._next_id(), self._micros(), event_type, sid))

    def _activate(self, sid: int, now: float) -> None:
        self._rospec_event(0, sid)
        self._active = sid
        self._activated_at = now
        self._pending.clear()
        self._ai_started = now
        self._last_tick = now
        self._budget = 0.0

    def _deactivate(self, sid: int, now: float) -> None:
        if self._active == sid:
            self._flush(now)  # end of ROSpec: report what is pending
            self._active = None
            self._rospec_event(1, sid)

    # ---------------------------------------------------------------- inventory
    def _forget_rospecs(self) -> None:
        self.stats.rospecs_lost += 1
        self._rospecs.clear()
        self._enabled.clear()
        self._active = None
        self._pending.clear()

    def _inventory(self, now: float) -> None:
        dt = now - self._last_tick
        self._last_tick = now
        if self._active is None or self._is_silent():
            return
        lose_after = self.quirks.loses_rospec_after_s
        if lose_after and now - self._activated_at >= lose_after and not self.stats.rospecs_lost:
            log.info("simulated reader %s: inventory engine restarts, ROSpecs lost", self.name)
            self._forget_rospecs()
            return
        spec = self._rospecs[self._active]
        if not self._held:
            self._generate(spec, dt, now)
        timeout_s = spec.report_timeout_ms / 1000.0
        ai_s = spec.ai_duration_ms / 1000.0 if spec.ai_stop_trigger == 1 else 0.0
        if self._pending and timeout_s and now - self._pending_since >= timeout_s:
            self._flush(now)
        elif ai_s and now - self._ai_started >= ai_s:
            self._ai_started = now
            self._flush(now)
        if spec.stop_trigger == 1 and spec.stop_duration_ms and \
                now - self._ai_started >= spec.stop_duration_ms / 1000.0:
            self._deactivate(spec.rospec_id, now)

    def _generate(self, spec: codec.RoSpec, dt: float, now: float) -> None:
        ants = [a for a in spec.antennas if a in self.antennas] if spec.antennas and \
            spec.antennas != [0] else self.antennas
        if self.quirks.antenna1_unless_configured:
            ants = [a for a in ants if a == 1 or a in spec.configured_antennas]
        fields = [(a, self._field(a)) for a in ants]
        fields = [(a, f) for a, f in fields if f]
        if not fields:
            self._budget = 0.0
            return
        self._budget = min(self._budget + self.reads_per_s * max(dt, 0.0),
                           max(self.reads_per_s * 0.25, 1.0))
        wanted = int(self._budget)
        if wanted <= 0:
            return
        self._budget -= wanted
        rng = self._rng
        micros = self._micros()
        n_tags = spec.n_tags
        reads = [r for r, on in self._access.values() if on]
        access = reads[0] if reads else None
        attempts = wanted * 4 + 8
        got = 0
        while got < wanted and attempts > 0:
            attempts -= 1
            self._ant_turn = (self._ant_turn + 1) % len(fields)
            ant, tags = fields[self._ant_turn]
            cur = self._cursor.get(ant, 0)
            tag = tags[cur % len(tags)]
            self._cursor[ant] = cur + 1
            if tag.read_probability < 1.0 and rng.random() >= tag.read_probability:
                continue
            got += 1
            rssi = round(rng.gauss(tag.rssi_mean_dbm, tag.rssi_stddev_dbm))
            data = None if access is None else self._read_bank(tag, access)
            key = (tag.epc, ant, data)
            obs = self._pending.get(key)
            if obs is None:
                if not self._pending:
                    self._pending_since = now
                self._pending[key] = codec.TagObservation(
                    tag.epc, ant, rssi, micros, micros, read_data=data,
                    op_spec_id=access.op_spec_id if access is not None else 1)
                if n_tags and len(self._pending) >= n_tags:
                    self._flush(now)
                    if self._conn is None:
                        return
            else:
                obs.seen_count += 1
                obs.last_seen_us = micros
                obs.peak_rssi = max(obs.peak_rssi, rssi)

    @staticmethod
    def _read_bank(tag: FieldTag, read: codec.AccessRead) -> bytes:
        """What a C1G2Read returns: words of the TID bank (or EPC bank), zero-padded."""
        bank = (tag.tid or tid_for(tag.epc)) if read.bank == 2 else \
            b"\x00\x00\x00\x00" + tag.epc if read.bank == 1 else b""
        count = read.word_count or max(len(bank) // 2 - read.word_ptr, 0)
        words = bank[read.word_ptr * 2:(read.word_ptr + count) * 2]
        return words.ljust(count * 2, b"\x00")

    def _flush(self, now: float) -> None:
        if not self._pending or self._conn is None:
            return
        spec = self._rospecs.get(self._active or 0)
        sel = spec.selector if spec else codec.ContentSelector()
        if self.quirks.omit_optional_fields:
            sel = codec.ContentSelector(antenna_id=False, peak_rssi=False, first_seen=False,
                                        tag_seen_count=False)
        tags = list(self._pending.values())
        self._pending.clear()
        extra = b""
        if self.quirks.undecodable_vendor_params:
            extra = codec.custom_parameter(MOTOROLA_PEN, 1, b"\x02")
        data = codec.ro_access_report(self._next_id(), tags, sel, self._active or 0, extra)
        if self._send(data):
            self.stats.reports_sent += 1
            self.stats.tags_reported += len(tags)
            self.stats.reads_reported += sum(t.seen_count for t in tags)

    def _keepalive(self, now: float) -> None:
        conn = self._conn
        if conn is None or not conn.keepalive_ms or self._is_silent():
            return
        if now >= conn.next_keepalive:
            conn.next_keepalive = now + conn.keepalive_ms / 1000.0
            if self._send(codec.keepalive(self._next_id())):
                self.stats.keepalives_sent += 1


def frame_lengths(data: bytes) -> list[int]:
    """Lengths of the complete frames in `data` (a helper for tests reading raw streams)."""
    out = []
    pos = 0
    while pos + codec.HEADER_LEN <= len(data):
        (length,) = struct.unpack_from("!I", data, pos + 2)
        if length < codec.HEADER_LEN or pos + length > len(data):
            break
        out.append(length)
        pos += length
    return out
