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

from readers import llrp_wire as wire
from readers.base import ReaderSink, ReaderState, TagRead
from readers.llrp_profiles import PROFILES, DeviceInfo, Profile, device_info, profile_for
from readers.supervise import WATCHDOG_FACTOR, Backoff, Supervisor

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!HII")
_NO_RESPONSE = {64: "ENABLE_EVENTS_AND_REPORTS", 72: "KEEPALIVE_ACK"}
# Requests the driver itself sends after the handshake: an ERROR_MESSAGE to one is handled.
_OWN_REQUESTS = {wire.GET_ROSPECS: "GET_ROSPECS", wire.START_ROSPEC: "START_ROSPEC",
                 40: "ADD_ACCESSSPEC", 42: "ENABLE_ACCESSSPEC",
                 wire.ENABLE_ROSPEC: "ENABLE_ROSPEC", wire.ADD_ROSPEC: "ADD_ROSPEC",
                 wire.CUSTOM: "IMPINJ_ENABLE_EXTENSIONS"}
ROSPEC_ID = 1  # the one ROSpec sllurp installs
TID_ACCESS_SPEC_ID = 7
_TOLERATED_FAILURES = ("DELETE_ROSPEC_RESPONSE", "DELETE_ACCESSSPEC_RESPONSE")
# A reader clock this far from ours is wrong (no NTP on the reader): stamp its reads with our
# receive time instead, and count it. Presence judges departures on our clock, so a reader 10 min
# slow would otherwise make every item depart and arrive at each sweep.
_CLOCK_SKEW_S = 30.0


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
    vendor: str = "auto"
    verify_s: float = 30.0
    not_reading_reconnect_s: float = 60.0
    antenna_check_s: float = 60.0
    read_tid: bool = False
    tid_words: int = 6

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
        self.by_kind: dict[str, int] = {}

    def __call__(self, kind: str, detail: str) -> None:
        self.count += 1
        if kind in self.by_kind:
            self.by_kind[kind] += 1
        else:  # copy on write: `rfidd readers` iterates it from another thread
            self.by_kind = {**self.by_kind, kind: 1}
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
            if wire.message_type(frame) == wire.GET_ROSPECS_RESPONSE:  # sllurp cannot decode it
                self._session.on_get_rospecs_response(frame)
                continue
            lmsg = self._decode(frame)
            if lmsg is None:
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


    def _decode(self, frame: bytes) -> LLRPMessage | None:
        """sllurp's decoding; on failure, once more without the vendor parameters (a field
        we do not use must not cost the standard data around it). None: skipped, counted."""
        try:
            return LLRPMessage(msgbytes=frame)
        except Exception as exc:
            first = exc
        try:
            stripped, removed = wire.strip_custom_parameters(frame)
            if removed:
                lmsg = LLRPMessage(msgbytes=stripped)
                self._session.anomaly("undecodable_vendor_parameter",
                                      f"{removed} vendor parameter(s) sllurp cannot decode "
                                      f"skipped ({first!s:.120})")
                return lmsg
        except Exception:
            pass
        self._session.anomaly("undecodable_message", f"{len(frame)} bytes: {first}")
        return None

    def send_own(self, msg: dict[str, Any]) -> None:
        """Send a message through sllurp's encoder and id counter (on its thread only)."""
        self.llrp.sendMessage(msg)

    def send_get_rospecs(self) -> None:
        llrp = self.llrp
        llrp.last_msg_id = llrp.last_msg_id + 1 if llrp.last_msg_id < 0x7FFFFFFF else 1
        self.send_data(wire.get_rospecs(llrp.last_msg_id))


class _SllurpSession:
    """One connection: a sllurp client plus what the supervisor watches."""

    def __init__(self, reader: LlrpReader) -> None:
        self.reader = reader
        self.settings = reader.settings
        self._failure: str | None = None
        self._ready = False  # handshake complete (ENABLE_ROSPEC answered)
        self._reading = False  # the ROSpec is confirmed Active
        self._why_not = "handshake"
        self._last = reader.clock()
        self._last_report = self._last
        self._reading_since = 0.0
        self._query_at: float | None = None  # a GET_ROSPECS is outstanding since
        self._last_query = -1e18
        self._get_rospecs_ok = True
        self._own: dict[str, int] = {}  # responses owed to requests the driver sent itself
        self._caps_done = False
        self._mode_retried = False
        self._antenna_named: frozenset[int] = frozenset()
        self._tid_asked = False
        cfg = LLRPReaderConfig(reader.sllurp_config())
        self.client = _Client(self, reader.host, reader.settings.port, cfg,
                              timeout=reader.socket_timeout_s)
        self.client.add_tag_report_callback(self._on_tags)
        self.client.add_state_callback(LLRPReaderState.STATE_INVENTORYING, self._on_inventorying)
        self.client.add_state_callback(LLRPReaderState.STATE_SENT_GET_CONFIG,
                                       self._on_capabilities)
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
        if name == "KEEPALIVE":
            self._on_keepalive()
            return True
        if name == "RO_ACCESS_REPORT":
            return self._on_report(body)
        if self._own.get(name):
            self._owe(name, -1)
            self._on_own_response(name, lmsg.isSuccess(), body)
            return False
        if name == "ADD_ROSPEC_RESPONSE" and not lmsg.isSuccess() and self._retry_mode(body):
            return False
        if name == "ERROR_MESSAGE":
            status = body.get("LLRPStatus", {})
            answered = sent.get(int(body.get("ID", -1)))
            what = f"{status.get('StatusCode', '?')}: {_text(status.get('ErrorDescription'))}"
            if (answered in _OWN_REQUESTS and self._ready) or answered == wire.CUSTOM:
                self._on_own_error(answered or 0, what)
                return False
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
            data = body.get("ReaderEventNotificationData", {})
            rospec_event = data.get("ROSpecEvent")
            if isinstance(rospec_event, dict):
                self._on_rospec_event(rospec_event)
            event = data.get("ConnectionAttemptEvent")
            if event is not None and event.get("Status") != "Success":
                self.fail("connection_refused", f"reader refused the connection: "
                          f"{event.get('Status')}")
                raise ReaderConfigurationError("connection refused")
        return True

    def _on_inventorying(self, _client: Any, _state: int) -> None:
        """ENABLE_ROSPEC was accepted. Enabled is not Active: confirm before calling it online."""
        self._ready = True
        self._why_not = "ROSpec enabled, not yet confirmed active"
        self._query()
        self.reader.wake()

    def _on_capabilities(self, client: Any, _state: int) -> None:
        """Capabilities parsed: who the reader is decides vendor extensions and the mode."""
        if self._caps_done:
            return
        self._caps_done = True
        llrp = client.llrp
        info = device_info(llrp.capabilities or {})
        profile = self.reader.on_device(info)
        if llrp.reader_mode is not None:
            self.reader.mode_selected = int(llrp.reader_mode["ModeIdentifier"])
            if self.reader.mode_by_position and info.modes:
                position = info.modes.index(self.reader.mode_selected)
                llrp.reader_mode = dict(llrp.reader_mode, ModeIdentifier=position)
        search = self.settings.search_mode
        if search is None:
            search = profile.search_mode
        if search is None:
            return
        if info.vendor == "impinj" and profile.impinj_extensions and \
                (self.settings.impinj_extensions or self.settings.vendor == "impinj"):
            llrp.config.impinj_search_mode = search
            self._owe("IMPINJ_ENABLE_EXTENSIONS_RESPONSE")
            self.client.send_own({"IMPINJ_ENABLE_EXTENSIONS": {}})
            self.reader.extensions = "impinj"
        else:
            self.anomaly("vendor_extension_skipped",
                         f"Impinj search mode asked but the reader is {info.vendor} "
                         f"(manufacturer {info.manufacturer}, model {info.model}): not sent")

    def _retry_mode(self, body: Mapping[str, Any]) -> bool:
        """ADD_ROSPEC refused while a mode was set: the reader may take ModeIndex as a table
        position (the standard's wording) rather than the mode identifier. Retry once so."""
        llrp = self.client.llrp
        if self._mode_retried or llrp.reader_mode is None or self.reader.mode_by_position:
            return False
        info = self.reader.device
        if info is None or self.reader.mode_selected not in info.modes:
            return False
        position = info.modes.index(self.reader.mode_selected)
        if position == self.reader.mode_selected:
            return False
        self._mode_retried = True
        status = body.get("LLRPStatus", {})
        self.anomaly("mode_index_by_position",
                     f"ADD_ROSPEC refused with ModeIndex={self.reader.mode_selected} "
                     f"({_text(status.get('ErrorDescription'))}); retrying with the mode's "
                     f"table position {position}")
        self.reader.mode_by_position = True
        llrp.reader_mode = dict(llrp.reader_mode, ModeIdentifier=position)
        llrp.rospec = None
        rospec = llrp.getROSpec(force_new=True)
        llrp.sendMessage({"ADD_ROSPEC": {"ROSpecID": rospec["ROSpecID"], "ROSpec": rospec}})
        return True

    # ROSpec confirmation ----------------------------------------------------------------
    def _owe(self, response: str, n: int = 1) -> None:
        self._own[response] = max(0, self._own.get(response, 0) + n)

    def _query(self) -> None:
        now = self.reader.clock()
        self._last_query = now
        if self._get_rospecs_ok:
            self._query_at = now
            self.client.send_get_rospecs()
        else:
            self._start()

    def _start(self) -> None:
        self._owe("START_ROSPEC_RESPONSE")
        self.client.send_own({"START_ROSPEC": {"ROSpecID": ROSPEC_ID}})

    def _set_reading(self, reading: bool, why: str) -> None:
        if reading and not self._reading:
            self._reading_since = self.reader.clock()
            self._last_report = self._reading_since
            if self.settings.read_tid and not self._tid_asked:
                self._tid_asked = True
                self._ask_tid()
        self._reading = reading
        self._why_not = "" if reading else why
        self.reader.wake()

    def _ask_tid(self) -> None:
        """An AccessSpec reading the TID bank of every tag inventoried, reported with each
        tag (C1G2ReadOpSpecResult): the chip's serial, which a cloned EPC does not copy."""
        spec = {
            "AccessSpecID": TID_ACCESS_SPEC_ID, "AntennaID": 0, "ProtocolID": 1,
            "CurrentState": False, "ROSpecID": 0,
            "AccessSpecStopTrigger": {"AccessSpecStopTriggerType": 0, "OperationCountValue": 0},
            "AccessCommand": {
                "TagSpecParameter": {"C1G2TagSpec": {"C1G2TargetTag": [
                    {"MB": 0, "M": 1, "Pointer": 0, "TagMask": "", "TagData": ""}]}},
                "OpSpecParameter": [{"C1G2Read": {
                    "OpSpecID": 1, "AccessPassword": 0, "MB": 2, "WordPtr": 0,
                    "WordCount": self.settings.tid_words}}],
            },
            "AccessReportSpec": {"AccessReportTrigger": 0},  # with every tag report
        }
        self._owe("ADD_ACCESSSPEC_RESPONSE")
        self.client.send_own({"ADD_ACCESSSPEC": {"AccessSpec": spec}})

    def on_get_rospecs_response(self, frame: bytes) -> None:
        self._query_at = None
        try:
            got = wire.parse_get_rospecs_response(frame)
        except wire.WireError as exc:
            self.anomaly("bad_get_rospecs_response", str(exc))
            self._get_rospecs_ok = False
            self._start()
            return
        if got.status_code != 0:
            self.anomaly("get_rospecs_unsupported",
                         f"GET_ROSPECS failed ({got.status_code}: {got.description}); "
                         "sending START_ROSPEC instead of asking")
            self._get_rospecs_ok = False
            self._start()
            return
        state = got.states.get(ROSPEC_ID)
        if state == wire.ACTIVE:
            self._set_reading(True, "")
        elif state == wire.INACTIVE:
            self.anomaly("rospec_not_started", "ROSpec enabled but Inactive (the reader waits "
                         "for START_ROSPEC): starting it")
            self._set_reading(False, "ROSpec Inactive: START_ROSPEC sent")
            self._start()
        elif state == wire.DISABLED:
            self.anomaly("rospec_disabled", "ROSpec Disabled: enabling it again")
            self._set_reading(False, "ROSpec Disabled: ENABLE_ROSPEC sent")
            self._owe("ENABLE_ROSPEC_RESPONSE")
            self.client.send_own({"ENABLE_ROSPEC": {"ROSpecID": ROSPEC_ID}})
        else:
            self.anomaly("rospec_lost", f"the reader no longer has ROSpec {ROSPEC_ID} (it "
                         f"reports {sorted(got.states) or 'none'}): reinstalling it")
            self._set_reading(False, "ROSpec lost by the reader: reinstalling")
            rospec = self.client.llrp.getROSpec()
            self._owe("ADD_ROSPEC_RESPONSE")
            self.client.send_own({"ADD_ROSPEC": {"ROSpecID": ROSPEC_ID, "ROSpec": rospec}})

    def _on_own_response(self, name: str, ok: bool, body: Mapping[str, Any]) -> None:
        status = body.get("LLRPStatus", {})
        what = f"{status.get('StatusCode', '?')}: {_text(status.get('ErrorDescription'))}"
        if name == "IMPINJ_ENABLE_EXTENSIONS_RESPONSE":
            if not ok:
                self._drop_extensions(what)
            return
        if name == "START_ROSPEC_RESPONSE":
            if ok:
                self._set_reading(False, "START_ROSPEC accepted, confirming")
                if self._get_rospecs_ok:
                    self._query()
                else:
                    self._set_reading(True, "")
            elif "activ" in what.lower():
                self.anomaly("start_rospec_already_active",
                             f"START_ROSPEC refused as already active ({what}); carrying on")
                self._set_reading(True, "")
            else:
                self.anomaly("start_rospec_refused", f"START_ROSPEC refused ({what})")
                self._set_reading(False, f"START_ROSPEC refused ({what})")
            return
        if name == "ADD_ACCESSSPEC_RESPONSE":
            if ok:
                self._owe("ENABLE_ACCESSSPEC_RESPONSE")
                self.client.send_own({"ENABLE_ACCESSSPEC": {"AccessSpecID": TID_ACCESS_SPEC_ID}})
            else:
                self.anomaly("tid_read_refused", f"the reader refused the TID AccessSpec "
                             f"({what}): reads carry no TID")
            return
        if name == "ENABLE_ACCESSSPEC_RESPONSE":
            if ok:
                self.reader.tid_reading = True
            else:
                self.anomaly("tid_read_refused", f"ENABLE_ACCESSSPEC refused ({what})")
            return
        if name == "ADD_ROSPEC_RESPONSE":
            if ok:
                self._owe("ENABLE_ROSPEC_RESPONSE")
                self.client.send_own({"ENABLE_ROSPEC": {"ROSpecID": ROSPEC_ID}})
            else:
                self.fail("rospec_reinstall_failed", f"reinstalling the ROSpec failed ({what})")
            return
        if name == "ENABLE_ROSPEC_RESPONSE":
            if ok:
                self._query()
            else:
                self.fail("rospec_reinstall_failed", f"enabling the ROSpec failed ({what})")

    def _on_own_error(self, answered: int, what: str) -> None:
        if answered == wire.GET_ROSPECS:
            self._query_at = None
            self._get_rospecs_ok = False
            self.anomaly("get_rospecs_unsupported", f"reader answered GET_ROSPECS with "
                         f"ERROR_MESSAGE ({what}); sending START_ROSPEC instead of asking")
            self._start()
        elif answered == wire.START_ROSPEC:
            self._owe("START_ROSPEC_RESPONSE", -1)
            self._on_own_response("START_ROSPEC_RESPONSE", False,
                                  {"LLRPStatus": {"ErrorDescription": what}})
        elif answered == wire.CUSTOM:
            self._owe("IMPINJ_ENABLE_EXTENSIONS_RESPONSE", -1)
            self._drop_extensions(what)
        elif answered in (40, 42):  # ADD / ENABLE_ACCESSSPEC: TIDs are a bonus, not a need
            self._owe("ADD_ACCESSSPEC_RESPONSE" if answered == 40
                      else "ENABLE_ACCESSSPEC_RESPONSE", -1)
            self.anomaly("tid_read_refused", f"reader answered {_OWN_REQUESTS[answered]} with "
                         f"ERROR_MESSAGE ({what}): reads carry no TID")
        else:
            self.fail("error_message", f"reader answered {_OWN_REQUESTS[answered]} with "
                      f"ERROR_MESSAGE ({what})")

    def _drop_extensions(self, what: str) -> None:
        self.anomaly("vendor_extension_refused", f"IMPINJ_ENABLE_EXTENSIONS refused ({what}); "
                     "going on without extensions")
        self.client.llrp.config.impinj_search_mode = None
        self.reader.extensions = None

    def _on_rospec_event(self, event: Mapping[str, Any]) -> None:
        if int(event.get("ROSpecID", -1)) != ROSPEC_ID or not self._ready:
            return
        kind = event.get("EventType")
        if kind == "Start_of_ROSpec":
            self._set_reading(True, "")
        elif kind in ("End_of_ROSpec", "Preemption_of_ROSpec"):
            self._set_reading(False, f"reader event {kind}")
            self._query()

    def _on_report(self, body: Mapping[str, Any]) -> bool:
        tags = body.get("TagReportData") or []
        if self.client.llrp.state != LLRPReaderState.STATE_INVENTORYING:
            # sllurp drops a report unless it is inventorying: one that precedes the
            # ENABLE_ROSPEC response (a deviation), or the last one while stopping. Keep both.
            if tags:
                if not self._ready:
                    self.anomaly("report_before_enable_response",
                                 f"{len(tags)} tag(s) reported before the ENABLE_ROSPEC "
                                 "response: kept")
                self.reader.convert_and_deliver(tags)
            return False
        if tags:
            self._last_report = self.reader.clock()
            if not self._reading:
                self._set_reading(True, "")
        return True

    def _on_keepalive(self) -> None:
        """Periodic checks, on sllurp's thread (the only one that writes to the socket)."""
        if not self._ready:
            return
        now = self.reader.clock()
        s = self.settings
        if self._query_at is not None:
            if now - self._query_at < max(s.verify_s, s.keepalive_s * 2):
                return
            self.anomaly("get_rospecs_unanswered", "no answer to GET_ROSPECS: sending "
                         "START_ROSPEC instead of asking")
            self._query_at = None
            self._get_rospecs_ok = False
            self._start()
            return
        if not self._reading:
            self._query()
        elif now - self._last_report >= s.verify_s and now - self._last_query >= s.verify_s:
            self._query()  # nothing read for a while: is the ROSpec still there?
        if self._reading and now - self._reading_since >= s.antenna_check_s:
            self._check_antennas()

    def _check_antennas(self) -> None:
        seen = self.reader.antennas_seen
        if not seen:
            return  # an empty field: the silence timer's business, not an antenna fault
        silent = frozenset(a for a in self.reader.antennas if a not in seen)
        if silent and silent != self._antenna_named:
            self.anomaly("antenna_silent", f"antenna(s) {sorted(silent)} configured and mapped "
                         f"but never reported (antennas {sorted(seen)} did)")
        self._antenna_named = silent

    def _on_disconnected(self, _client: Any) -> None:
        self.fail("disconnected", "connection closed")

    def _on_tags(self, _client: Any, tags: Any) -> None:
        self.reader.convert_and_deliver(tags)

    # called by the supervisor ---------------------------------------------------------------
    def open(self) -> None:
        self.client.connect()

    def ready(self) -> bool:
        return self._ready

    def reading(self) -> bool:
        return self._ready and self._reading

    def not_reading_reason(self) -> str:
        return self._why_not

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


def _tid(tag: Mapping[str, Any]) -> str | None:
    """The TID of a tag report, where the reader sent one: the result of our TID-bank
    AccessSpec read (C1G2ReadOpSpecResult ReadData) or Impinj's serialized TID."""
    serialized = tag.get("ImpinjSerializedTID")
    if isinstance(serialized, Mapping):
        words = serialized.get("TID")
        if isinstance(words, bytes | bytearray):
            return words.hex().upper() or None
    for result in _as_list(tag.get("OpSpecResult") or tag.get("C1G2ReadOpSpecResult")):
        if isinstance(result, Mapping) and int(result.get("Result", 0)) == 0:
            data = result.get("ReadData")
            if isinstance(data, bytes | bytearray) and data:
                return data.hex().upper()
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


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
        # What the reader told us (kept across reconnects; read by `rfidd readers`).
        self.device: DeviceInfo | None = None
        self.profile: Profile = profile_for(self.settings.vendor, None)
        self.mode_selected: int | None = None
        self.mode_by_position = False  # learnt: the reader takes ModeIndex as a position
        self.extensions: str | None = None
        self.antennas_seen: set[int] = set()
        self.tid_reading = False
        self._supervisor = Supervisor(
            name, sink, self._open_session,
            watchdog_s=watchdog_s if watchdog_s is not None
            else WATCHDOG_FACTOR * self.settings.keepalive_s,
            handshake_timeout_s=self.settings.handshake_timeout_s,
            backoff=backoff, stop_event=stop_event, clock=clock,
            not_reading_reconnect_s=self.settings.not_reading_reconnect_s,
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

    def anomaly_counts(self) -> dict[str, int]:
        return dict(self._anomaly.by_kind)

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    def info(self) -> dict[str, Any]:
        """What `rfidd readers` shows: identity, profile, mode, antennas, anomalies."""
        d = self.device
        return {
            "kind": "llrp",
            "vendor": d.vendor if d else None,
            "vendor_configured": self.settings.vendor,
            "profile": self.profile.vendor,
            "manufacturer": d.manufacturer if d else None,
            "model": d.model if d else None,
            "firmware": d.firmware if d else None,
            "mode": self.mode_selected,
            "mode_index": "position" if self.mode_by_position else "identifier",
            "extensions": self.extensions,
            "tid": self.tid_reading,
            "antennas": list(self.antennas),
            "antennas_reporting": sorted(self.antennas_seen),
            "anomalies": dict(sorted(dict(self._anomaly.by_kind).items())),
        }

    def on_device(self, info: DeviceInfo) -> Profile:
        """The capabilities named the reader: choose its profile (detected beats configured)."""
        configured = self.settings.vendor
        if configured not in ("auto", info.vendor):
            self.anomaly("vendor_mismatch", f"configured vendor {configured!r} but the reader "
                         f"says {info.vendor} (manufacturer {info.manufacturer}, model "
                         f"{info.model}): using the {info.vendor} profile")
        if self.device is None or self.device != info:
            log.info("reader %s: %s model %d firmware %s, %d antennas, modes %s", self.name,
                     info.vendor, info.model, info.firmware, info.max_antennas, list(info.modes))
        self.device = info
        self.profile = PROFILES.get(info.vendor, PROFILES["generic"])
        return self.profile

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
            # A reader that sends ROSpec events tells us when inventory starts and stops.
            "event_selector": {"ROSpecEvent": True},
        }
        if s.tx_power_dbm is not None:
            cfg["tx_power_dbm"] = float(s.tx_power_dbm)
        if s.mode_identifier is not None:
            cfg["mode_identifier"] = s.mode_identifier
        # Impinj extensions are decided once the capabilities name the vendor (never here:
        # sllurp would send them before asking who the reader is).
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
        if not epc or len(epc) % 2 or any(c not in "0123456789ABCDEF" for c in epc):
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
        antenna = int(antenna)
        if antenna and antenna not in self.antennas_seen:
            self.antennas_seen = self.antennas_seen | {antenna}  # copy on write (see info)
        return TagRead(
            epc=epc, reader=self.name, antenna=antenna,
            rssi_dbm=None if rssi is None else float(rssi), seen_at=seen_at,
            seen_count=max(1, int(count)) if count is not None else 1,
            tid=_tid(tag),
        )
