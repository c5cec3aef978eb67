"""One LLRP connection: sllurp's client with our framing, and what the driver adds to it.

`_Client` bounds frames and filters deviations before sllurp's state machine sees them;
`SllurpSession` confirms the ROSpec is Active after ENABLE_ROSPEC (GET_ROSPECS, START_ROSPEC,
reinstall), decides vendor extensions and the RF mode from the capabilities, keeps reports
sllurp would drop, reads TIDs, and is what the supervisor watches (readers.supervise.Session).
Everything here runs on sllurp's thread, the only one that writes to the socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sllurp.llrp import LLRPMessage, LLRPReaderClient, LLRPReaderConfig, LLRPReaderState
from sllurp.llrp_errors import ReaderConfigurationError

from readers import llrp_wire as wire
from readers.llrp_profiles import device_info

if TYPE_CHECKING:
    from readers.llrp import LlrpReader

log = logging.getLogger("readers.llrp")

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
# sllurp states that expect only a ConnectionAttemptEvent in a READER_EVENT_NOTIFICATION.
_OUT_OF_SESSION = (LLRPReaderState.STATE_DISCONNECTED, LLRPReaderState.STATE_CONNECTING,
                   LLRPReaderState.STATE_CONNECTED)


class _Client(LLRPReaderClient):  # type: ignore[misc]
    """sllurp's client with our framing: bounded frames, deviations filtered before its FSM."""

    def __init__(self, session: SllurpSession, host: str, port: int,
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

    def main_loop(self) -> None:
        """sllurp's loop; its end (even by an exception sllurp only logs) wakes the
        supervisor, which does not poll."""
        try:
            super().main_loop()
        finally:
            self._session.reader.wake()

    def send_data(self, data: bytes) -> None:
        if self._socket is None and self._stop_main_loop.is_set():
            # closing: an answer sllurp owes a message that came in as we hung up (a
            # keepalive ack...) has nowhere to go; raised, sllurp logs "Disconnected because of
            # a reader configuration error" at every clean stop
            log.debug("reader %s: closed, not sending a %d-byte message", self._session.reader.name,
                      len(data))
            return
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
            mtype = wire.message_type(frame)
            if mtype == wire.GET_ROSPECS_RESPONSE:  # sllurp cannot decode it
                self._session.on_get_rospecs_response(frame)
                continue
            if mtype == wire.RO_ACCESS_REPORT and self._session.fast_report(frame):
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


class SllurpSession:
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
            if event is None and self.client.llrp.state in _OUT_OF_SESSION:
                # Out of session (before the handshake, or after our own disconnect: the
                # ROSpec's end, the reader's ConnectionCloseEvent) sllurp only wants a
                # ConnectionAttemptEvent; it ignores anything else but logs it at FATAL,
                # which pages whoever watches the journal at every stop.
                return False
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
        self.settings = s = self.reader.settings  # now with the family's defaults
        # Read by sllurp after this point: SET_READER_CONFIG (keepalive) and the ROSpec.
        llrp.config.session = int(s.session)
        llrp.config.tag_population = s.tag_population
        llrp.config.report_every_n_tags = s.report_every_n_tags
        llrp.config.report_timeout_ms = s.report_timeout_ms
        llrp.config.keepalive_interval = max(1, int(s.keepalive_s * 1000))
        if llrp.reader_mode is not None:
            self.reader.mode_selected = int(llrp.reader_mode["ModeIdentifier"])
            if self.reader.mode_by_position and info.modes:
                position = info.modes.index(self.reader.mode_selected)
                llrp.reader_mode = dict(llrp.reader_mode, ModeIdentifier=position)
        search = s.search_mode
        if search is None:
            return
        if info.vendor == "impinj" and profile.impinj_extensions and \
                (s.impinj_extensions or s.vendor == "impinj"):
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

    def fast_report(self, frame: bytes) -> bool:
        """An RO_ACCESS_REPORT through the struct decoder, never becoming sllurp objects (what
        sllurp's state machine does with one is only to hand its tags to us). False: sllurp
        decodes it as before, counted as `report_decoded_by_sllurp`."""
        reader = self.reader
        if not reader.fast_decode:
            return False
        if reader.sheds():  # the daemon is behind: count and shed, do not decode
            try:
                reader.shed(wire.antenna_counts(frame, reader.default_antenna()))
                return True
            except wire.NotFast:
                pass
        try:
            tags = wire.decode_report(frame)
        except wire.NotFast as exc:
            self.anomaly("report_decoded_by_sllurp", f"{exc}: decoded by sllurp")
            return False
        if self.client.llrp.state != LLRPReaderState.STATE_INVENTORYING:
            if tags:  # as _on_report: sllurp would drop it, keep it
                if not self._ready:
                    self.anomaly("report_before_enable_response",
                                 f"{len(tags)} tag(s) reported before the ENABLE_ROSPEC "
                                 "response: kept")
                reader.deliver_raw(tags)
            return True
        if tags:
            self._last_report = reader.clock()
            if not self._reading:
                self._set_reading(True, "")
        reader.deliver_raw(tags)
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


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
