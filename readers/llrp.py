"""Fixed LLRP readers through sllurp, supervised.

sllurp does the protocol; this module adds what a daemon needs around it: its own bounded
framing (a desynchronised stream cannot buffer gigabytes), tolerance of vendor deviations
(ERROR_MESSAGE for a message that needs no answer, DELETE_ROSPEC(0) rejected, missing report
fields), conversion of sllurp's tag dicts into TagRead batches that can never kill the reader
thread, and supervision (readers.supervise).

`readers/` stays independent of the daemon: options arrive as plain values (`LlrpSettings`, a
mapping, or any object with the same attribute names, e.g. rfidd.config.LlrpOptions).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sllurp.llrp import LLRPMessage, LLRPReaderClient, LLRPReaderConfig, LLRPReaderState
from sllurp.llrp_errors import ReaderConfigurationError

from readers.base import ReaderSink, ReaderState, TagRead
from readers.supervise import WATCHDOG_FACTOR, Backoff, Supervisor

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!HII")
_NO_RESPONSE = {64: "ENABLE_EVENTS_AND_REPORTS", 72: "KEEPALIVE_ACK"}
_TOLERATED_FAILURES = ("DELETE_ROSPEC_RESPONSE", "DELETE_ACCESSSPEC_RESPONSE")
# A reader clock this far from ours is wrong (no NTP on the reader): stamp its reads with our
# receive time instead, and count it. Presence judges departures on our clock, so a reader 10 min
# slow would otherwise make every item depart and arrive at each sweep.
_CLOCK_SKEW_S = 30.0


_HEX_DIGITS = frozenset("0123456789ABCDEF")


@dataclass(frozen=True)
class LlrpSettings:
    """Plain LLRP options (same names and meaning as rfidd.config.LlrpOptions)."""

    port: int = 5084
    tx_power_dbm: float | None = None
    session: int = 1
    tag_population: int = 32
    mode_identifier: int | None = None
    search_mode: int | None = None
    report_every_n_tags: int = 100
    report_timeout_ms: int = 500
    impinj_extensions: bool = False
    epc_filter: tuple[str, ...] = ()
    keepalive_s: float = 10.0
    handshake_timeout_s: float = 15.0
    max_frame_bytes: int = 1_048_576

    @classmethod
    def from_any(cls, options: LlrpSettings | Mapping[str, Any] | Any | None) -> LlrpSettings:
        """Accept settings, a mapping, or an object with these attribute names (LlrpOptions)."""
        if options is None:
            return cls()
        if isinstance(options, LlrpSettings):
            return options
        names = [f.name for f in fields(cls)]
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(names))
            if unknown:
                raise ValueError(f"unknown LLRP option(s): {', '.join(unknown)}")
            values = dict(options)
        else:
            values = {n: getattr(options, n) for n in names if hasattr(options, n)}
        if "session" in values:
            values["session"] = int(values["session"])
        if "epc_filter" in values:
            values["epc_filter"] = tuple(str(p).upper() for p in values["epc_filter"])
        return cls(**values)


class _AnomalyLog:
    """Counts every anomaly through the sink; logs each kind once per reader at WARNING."""

    def __init__(self, reader: str, sink: ReaderSink) -> None:
        self._reader = reader
        self._sink = sink
        self._seen: set[str] = set()
        self.count = 0

    def __call__(self, kind: str, detail: str) -> None:
        self.count += 1
        if kind not in self._seen:
            self._seen.add(kind)
            log.warning("reader %s: %s: %s (further ones counted, not logged)", self._reader,
                        kind, detail)
        try:
            self._sink.on_anomaly(self._reader, kind, detail)
        except Exception:
            log.exception("reader %s: sink.on_anomaly raised", self._reader)


class _Client(LLRPReaderClient):  # type: ignore[misc]
    """sllurp's client with our framing: bounded frames, deviations filtered before its FSM."""

    def __init__(self, session: _SllurpSession, host: str, port: int,
                 config: LLRPReaderConfig, timeout: float) -> None:
        super().__init__(host, port, config, timeout=timeout)
        self._session = session
        self._buf = bytearray()
        self._sent: dict[int, int] = {}  # message id -> type, to name what an ERROR answers
        self._close_lock = threading.Lock()

    def hard_disconnect(self) -> None:
        """Idempotent and safe from two threads (sllurp's own can race the supervisor's)."""
        with self._close_lock:
            self._stop_main_loop.set()
            sock: Any = getattr(self, "_socket", None)
            self._socket = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def send_data(self, data: bytes) -> None:
        if len(data) >= _HEADER.size:
            word, _length, msg_id = _HEADER.unpack_from(data)
            self._sent[msg_id] = word & 0x3FF
            if len(self._sent) > 256:
                for key in list(self._sent)[:128]:
                    del self._sent[key]
        super().send_data(data)

    def raw_data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        limit = self._session.settings.max_frame_bytes
        while len(buf) >= _HEADER.size:
            _word, length, _msg_id = _HEADER.unpack_from(buf)
            if length < _HEADER.size or length > limit:
                buf.clear()
                self._session.fail("bad_frame", f"frame claims {length} bytes (limit {limit}): "
                                   "stream desynchronised")
                raise ReaderConfigurationError("desynchronised stream")
            if len(buf) < length:
                return
            frame = bytes(buf[:length])
            del buf[:length]
            self._session.touch()
            try:
                lmsg = LLRPMessage(msgbytes=frame)
            except Exception as exc:
                self._session.anomaly("undecodable_message", f"{len(frame)} bytes: {exc}")
                continue
            if not self._session.admit(lmsg, self._sent):
                continue
            self._on_llrp_message_received(lmsg)
            try:
                self.llrp.handleMessage(lmsg)
            except ReaderConfigurationError as exc:
                self._session.fail("handshake_error", f"{lmsg.getName()}: {exc}")
                raise
            except Exception as exc:
                self._session.fail("client_error", f"sllurp failed on {lmsg.getName()}: {exc!r}")
                raise ReaderConfigurationError(str(exc)) from exc


class _SllurpSession:
    """One connection: a sllurp client plus what the supervisor watches."""

    def __init__(self, reader: LlrpReader) -> None:
        self.reader = reader
        self.settings = reader.settings
        self._failure: str | None = None
        self._ready = False
        self._last = reader.clock()
        cfg = LLRPReaderConfig(reader.sllurp_config())
        self.client = _Client(self, reader.host, reader.settings.port, cfg,
                              timeout=reader.socket_timeout_s)
        self.client.add_tag_report_callback(self._on_tags)
        self.client.add_state_callback(LLRPReaderState.STATE_INVENTORYING, self._on_inventorying)
        self.client.add_disconnected_callback(self._on_disconnected)

    # called on sllurp's thread -------------------------------------------------------------
    def touch(self) -> None:
        self._last = self.reader.clock()

    def anomaly(self, kind: str, detail: str) -> None:
        self.reader.anomaly(kind, detail)

    def fail(self, kind: str, detail: str) -> None:
        if self._failure is None:
            self._failure = detail
            if kind not in ("disconnected",):
                self.reader.anomaly(kind, detail)
        self.reader.wake()

    def admit(self, lmsg: LLRPMessage, sent: dict[int, int]) -> bool:
        """Filter deviations before sllurp's state machine sees them; False drops the message."""
        name = lmsg.getName()
        body = lmsg.msgdict.get(name, {}) if lmsg.msgdict else {}
        if name == "ERROR_MESSAGE":
            status = body.get("LLRPStatus", {})
            answered = sent.get(int(body.get("ID", -1)))
            what = f"{status.get('StatusCode', '?')}: {_text(status.get('ErrorDescription'))}"
            if answered is None or answered in _NO_RESPONSE:
                req = _NO_RESPONSE.get(answered or -1, "an unknown message")
                self.anomaly("error_message", f"reader answered {req} with ERROR_MESSAGE ({what})")
                return False
            self.fail("error_message", f"reader answered message type {answered} with "
                      f"ERROR_MESSAGE ({what})")
            raise ReaderConfigurationError("ERROR_MESSAGE")
        if name in _TOLERATED_FAILURES and not lmsg.isSuccess():
            status = body.get("LLRPStatus", {})
            self.anomaly("rejected_delete", f"{name} {status.get('StatusCode', '?')}: "
                         f"{_text(status.get('ErrorDescription'))}; carrying on")
            body["LLRPStatus"] = {"StatusCode": "Success", "ErrorDescription": b""}
            return True
        if name == "READER_EVENT_NOTIFICATION":
            event = body.get("ReaderEventNotificationData", {}).get("ConnectionAttemptEvent")
            if event is not None and event.get("Status") != "Success":
                self.fail("connection_refused", f"reader refused the connection: "
                          f"{event.get('Status')}")
                raise ReaderConfigurationError("connection refused")
        return True

    def _on_inventorying(self, _client: Any, _state: int) -> None:
        self._ready = True
        self.reader.wake()

    def _on_disconnected(self, _client: Any) -> None:
        self.fail("disconnected", "connection closed")

    def _on_tags(self, _client: Any, tags: Any) -> None:
        self.reader.convert_and_deliver(tags)

    # called by the supervisor ---------------------------------------------------------------
    def open(self) -> None:
        self.client.connect()

    def ready(self) -> bool:
        return self._ready

    def alive(self) -> bool:
        return bool(self.client.is_alive())

    def failure(self) -> str | None:
        return self._failure

    def last_activity(self) -> float:
        return self._last

    def close(self, polite: bool) -> None:
        self._failure = self._failure or "closed"
        client = self.client
        if polite and client.is_alive():
            try:
                client.disconnect(timeout=self.reader.disconnect_timeout_s)
            except Exception as exc:
                log.debug("reader %s: polite disconnect failed: %s", self.reader.name, exc)
        try:
            client.hard_disconnect()
        except Exception as exc:
            log.debug("reader %s: hard disconnect failed: %s", self.reader.name, exc)
        client.join(self.reader.disconnect_timeout_s)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class LlrpReader:
    """A supervised LLRP reader (readers.base.ReaderDriver).

    `start()` returns at once; reads flow to `sink.on_reads` from sllurp's thread, state changes
    to `sink.on_state`, tolerated deviations to `sink.on_anomaly`.
    """

    def __init__(
        self,
        name: str,
        host: str,
        options: LlrpSettings | Mapping[str, Any] | Any | None,
        antennas: Sequence[int],
        sink: ReaderSink,
        *,
        backoff: Backoff | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        socket_timeout_s: float = 5.0,
        disconnect_timeout_s: float = 2.0,
        watchdog_s: float | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.settings = LlrpSettings.from_any(options)
        self.antennas = sorted({int(a) for a in antennas})
        if not self.antennas or self.antennas[0] < 1:
            raise ValueError(f"reader {name}: antennas must be numbers >= 1, got {antennas}")
        self.sink = sink
        self.clock = clock
        self.wall_clock = wall_clock
        self.socket_timeout_s = socket_timeout_s
        self.disconnect_timeout_s = disconnect_timeout_s
        self._anomaly = _AnomalyLog(name, sink)
        self._prefixes = tuple(self.settings.epc_filter)
        self.reads_total = 0
        self.reports_total = 0
        self._supervisor = Supervisor(
            name, sink, self._open_session,
            watchdog_s=watchdog_s if watchdog_s is not None
            else WATCHDOG_FACTOR * self.settings.keepalive_s,
            handshake_timeout_s=self.settings.handshake_timeout_s,
            backoff=backoff, stop_event=stop_event, clock=clock,
        )

    # ReaderDriver ---------------------------------------------------------------------------
    def start(self) -> None:
        self._supervisor.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._supervisor.stop(timeout)

    @property
    def state(self) -> ReaderState:
        return self._supervisor.state

    def running(self) -> bool:
        return self._supervisor.is_alive()

    def hung_for(self) -> float:
        return self._supervisor.hung_for()

    @property
    def anomalies(self) -> int:
        return self._anomaly.count

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    # internals ------------------------------------------------------------------------------
    def wake(self) -> None:
        self._supervisor.wake()

    def anomaly(self, kind: str, detail: str) -> None:
        self._anomaly(kind, detail)

    def sllurp_config(self) -> dict[str, Any]:
        """A fresh sllurp config dict (sllurp modifies its config object in place)."""
        s = self.settings
        cfg: dict[str, Any] = {
            "antennas": list(self.antennas),
            "report_every_n_tags": s.report_every_n_tags,
            "report_timeout_ms": s.report_timeout_ms,
            "session": int(s.session),
            "tag_population": s.tag_population,
            "tag_content_selector": {
                "EnableROSpecID": False,
                "EnableSpecIndex": False,
                "EnableInventoryParameterSpecID": False,
                "EnableAntennaID": True,
                "EnableChannelIndex": False,
                "EnablePeakRSSI": True,
                "EnableFirstSeenTimestamp": True,
                "EnableLastSeenTimestamp": False,
                "EnableTagSeenCount": True,
                "EnableAccessSpecID": False,
            },
            "keepalive_interval": max(1, int(s.keepalive_s * 1000)),
            "reset_on_connect": True,
            "start_inventory": True,
            "reconnect": False,
            "tx_power": 0,
        }
        if s.tx_power_dbm is not None:
            cfg["tx_power_dbm"] = float(s.tx_power_dbm)
        if s.mode_identifier is not None:
            cfg["mode_identifier"] = s.mode_identifier
        if s.impinj_extensions and s.search_mode is not None:
            cfg["impinj_search_mode"] = s.search_mode
        return cfg

    def _open_session(self) -> _SllurpSession:
        session = _SllurpSession(self)
        session.open()
        return session

    def convert_and_deliver(self, tags: Any) -> None:
        """sllurp tag dicts -> one TagRead batch for the sink. Never raises."""
        reads: list[TagRead] = []
        try:
            items = list(tags)
        except TypeError:
            self.anomaly("bad_report", f"tag report is not a list: {type(tags).__name__}")
            return
        now = self.wall_clock()
        missing: dict[str, int] = {}
        for tag in items:
            try:
                read = self._convert(tag, now, missing)
            except Exception as exc:
                self.anomaly("bad_tag", f"{exc!s} in {tag!r:.200}")
                continue
            if read is not None:
                reads.append(read)
        for what, n in missing.items():
            self.anomaly("missing_field", f"{n} tag(s) reported without {what}")
        self.reports_total += 1
        if not reads:
            return
        self.reads_total += len(reads)
        try:
            self.sink.on_reads(self.name, reads)
        except Exception as exc:
            log.exception("reader %s: sink.on_reads raised", self.name)
            self.anomaly("sink_error", repr(exc))

    def _convert(self, tag: Mapping[str, Any], now: float,
                 missing: dict[str, int]) -> TagRead | None:
        raw = tag.get("EPC-96")
        if raw is None:
            raw = tag.get("EPC")
        if raw is None:
            raise ValueError("no EPC-96 or EPC field")
        epc = (raw.decode("ascii") if isinstance(raw, bytes | bytearray) else str(raw)).upper()
        if not epc or len(epc) % 2 or not _HEX_DIGITS.issuperset(epc):  # one C call a tag
            raise ValueError(f"EPC {epc[:40]!r} is not hex")
        if self._prefixes and not epc.startswith(self._prefixes):
            return None
        antenna = tag.get("AntennaID")
        if antenna is None:
            missing["AntennaID"] = missing.get("AntennaID", 0) + 1
            antenna = self.antennas[0] if len(self.antennas) == 1 else 0
        rssi = tag.get("PeakRSSI")
        if rssi is None:
            missing["PeakRSSI"] = missing.get("PeakRSSI", 0) + 1
        micros = tag.get("FirstSeenTimestampUTC")
        if micros is None:
            micros = tag.get("LastSeenTimestampUTC")
        seen_at = now
        if micros is None:
            missing["a UTC timestamp"] = missing.get("a UTC timestamp", 0) + 1
        else:
            seen_at = int(micros) / 1e6
            if abs(seen_at - now) > _CLOCK_SKEW_S:
                self.anomaly("reader_clock", f"reader clock off by {seen_at - now:+.0f} s: "
                             "its reads are stamped with our time (set NTP on the reader)")
                seen_at = now
        count = tag.get("TagSeenCount")
        return TagRead(
            epc=epc, reader=self.name, antenna=int(antenna),
            rssi_dbm=None if rssi is None else float(rssi), seen_at=seen_at,
            seen_count=max(1, int(count)) if count is not None else 1,
        )
