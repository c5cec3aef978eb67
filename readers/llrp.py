"""Fixed LLRP readers through sllurp, supervised.

sllurp does the protocol; this module adds what a daemon needs around it: its own bounded
framing (a desynchronised stream cannot buffer gigabytes), tolerance of vendor deviations
(ERROR_MESSAGE for a message that needs no answer, DELETE_ROSPEC(0) rejected, missing report
fields), conversion of sllurp's tag dicts into TagRead batches that can never kill the reader
thread, and supervision (readers.supervise). One connection, and "online means reading" (the
ROSpec confirmed Active), live in readers.llrp_session.

`readers/` stays independent of the daemon: options arrive as plain values (`LlrpSettings`, a
mapping, or any object with the same attribute names, e.g. rfidd.config.LlrpOptions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from readers.base import ReaderSink, ReaderState, TagRead
from readers.llrp_profiles import PROFILE_OPTIONS, PROFILES, DeviceInfo, Profile, profile_for
from readers.llrp_session import SllurpSession
from readers.llrp_wire import RawTag, Row
from readers.supervise import WATCHDOG_FACTOR, Backoff, Supervisor

log = logging.getLogger(__name__)

# A reader clock this far from ours is wrong (no NTP on the reader): stamp its reads with our
# receive time instead, and count it. Presence judges departures on our clock, so a reader 10 min
# slow would otherwise make every item depart and arrive at each sweep.
_CLOCK_SKEW_S = 30.0


FAST_DECODE = 1
"""1: RO_ACCESS_REPORTs through readers.llrp_wire's struct decoder; 0: all through sllurp (the
figures before it, `rfidd bench --sllurp-decode`). A number, so the reader host gets it too."""

_HEX_DIGITS = frozenset("0123456789ABCDEF")
_TID_KEYS = frozenset(("ImpinjSerializedTID", "OpSpecResult", "C1G2ReadOpSpecResult"))
"""Where a tag report carries a TID (most carry none: one C call decides)."""


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
    explicit: frozenset[str] = field(default_factory=frozenset)
    """The options the configuration set: a profile never overrides those."""

    def with_profile(self, profile: Profile) -> LlrpSettings:
        """These settings with the family's defaults where the configuration set nothing."""
        values = {k: v for k, v in profile.defaults.items()
                  if k in PROFILE_OPTIONS and k not in self.explicit}
        return replace(self, **values)

    @classmethod
    def from_any(cls, options: LlrpSettings | Mapping[str, Any] | Any | None) -> LlrpSettings:
        """Accept settings, a mapping, or an object with these attribute names (LlrpOptions)."""
        if options is None:
            return cls()
        if isinstance(options, LlrpSettings):
            return options
        names = [f.name for f in fields(cls) if f.name != "explicit"]
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(names))
            if unknown:
                raise ValueError(f"unknown LLRP option(s): {', '.join(unknown)}")
            values = dict(options)
            explicit = frozenset(values)
        else:
            values = {n: getattr(options, n) for n in names if hasattr(options, n)}
            given = getattr(options, "model_fields_set", None)  # pydantic: what the file set
            explicit = frozenset(given) if given is not None else frozenset(values)
        values["explicit"] = explicit
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
        self.configured = LlrpSettings.from_any(options)
        self.settings = self.configured  # with the profile's defaults, below
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
        self.settings = self.configured.with_profile(self.profile)
        self._own_watchdog = watchdog_s is None  # follows the profile's keepalive
        self.mode_selected: int | None = None
        self.mode_by_position = False  # learnt: the reader takes ModeIndex as a position
        self.extensions: str | None = None
        self.antennas_seen: set[int] = set()
        self.tid_reading = False
        self.fast_decode = bool(FAST_DECODE)
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
            "profile_settings": {k: getattr(self.settings, k) for k in PROFILE_OPTIONS},
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
        self.settings = self.configured.with_profile(self.profile)
        if self._own_watchdog:
            self._supervisor.set_watchdog(WATCHDOG_FACTOR * self.settings.keepalive_s)
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

    def _open_session(self) -> SllurpSession:
        session = SllurpSession(self)
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
        self._deliver(reads, missing)

    def _deliver(self, reads: list[TagRead], missing: Mapping[str, int]) -> None:
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

    def sheds(self) -> bool:
        """The sink would shed this reader's next batch (the reader host's outbox is over this
        reader's share): then a report is counted, not decoded."""
        would_shed = getattr(self.sink, "would_shed", None)
        if would_shed is None or self._prefixes:  # filtered tags are never counted as read
            return False
        return bool(would_shed(self.name))

    def shed(self, per_antenna: Mapping[int, int]) -> None:
        """A report shed before decoding: counted as read (per antenna) and as shed."""
        n = sum(per_antenna.values())
        self.reports_total += 1
        self.reads_total += n
        for antenna in per_antenna:
            if antenna and antenna not in self.antennas_seen:
                self.antennas_seen = self.antennas_seen | {antenna}
        self.sink.shed(self.name, dict(per_antenna))  # type: ignore[attr-defined]

    def default_antenna(self) -> int:
        """What a tag reported without AntennaID is counted on."""
        return self.antennas[0] if len(self.antennas) == 1 else 0

    def deliver_raw(self, tags: Sequence[RawTag]) -> None:
        """Tags the fast decoder (readers.llrp_wire) took from a report -> one batch, by the
        same rules as `_make` (inlined: this runs for every tag of every report). A sink with
        `on_rows` (the reader host's) gets the rows it would have built from TagReads."""
        now = self.wall_clock()
        missing: dict[str, int] = {}
        prefixes = self._prefixes
        default = self.default_antenna()
        seen = self.antennas_seen
        rows: list[Row] = []
        append = rows.append
        for epc, antenna, rssi, micros, count, tid in tags:
            if prefixes and not epc.startswith(prefixes):
                continue
            if antenna is None:
                missing["AntennaID"] = missing.get("AntennaID", 0) + 1
                antenna = default
            if rssi is None:
                missing["PeakRSSI"] = missing.get("PeakRSSI", 0) + 1
                dbm = None
            else:
                dbm = float(rssi)
            if micros is None:
                missing["a UTC timestamp"] = missing.get("a UTC timestamp", 0) + 1
                seen_at = now
            else:
                seen_at = micros / 1e6
                if abs(seen_at - now) > _CLOCK_SKEW_S:
                    self.anomaly("reader_clock", f"reader clock off by {seen_at - now:+.0f} s: "
                                 "its reads are stamped with our time (set NTP on the reader)")
                    seen_at = now
            if antenna and antenna not in seen:
                seen = self.antennas_seen = seen | {antenna}  # copy on write (see info)
            append((epc, antenna, dbm, seen_at, count if count else 1, tid))
        on_rows = getattr(self.sink, "on_rows", None)
        if on_rows is None:
            name = self.name
            self._deliver([TagRead(e, name, a, r, t, n, tid) for e, a, r, t, n, tid in rows],
                          missing)
            return
        for what, n in missing.items():
            self.anomaly("missing_field", f"{n} tag(s) reported without {what}")
        self.reports_total += 1
        if rows:
            self.reads_total += len(rows)
            try:
                on_rows(self.name, rows)
            except Exception as exc:
                log.exception("reader %s: sink.on_rows raised", self.name)
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
        micros = tag.get("FirstSeenTimestampUTC")
        if micros is None:
            micros = tag.get("LastSeenTimestampUTC")
        return self._make(epc, tag.get("AntennaID"), tag.get("PeakRSSI"), micros,
                          tag.get("TagSeenCount"),
                          _tid(tag) if _TID_KEYS.intersection(tag) else None, now, missing)

    def _make(self, epc: str, antenna: Any, rssi: Any, micros: Any, count: Any,
              tid: str | None, now: float, missing: dict[str, int]) -> TagRead | None:
        """One TagRead from a tag's fields, whichever decoder found them."""
        if self._prefixes and not epc.startswith(self._prefixes):
            return None
        if antenna is None:
            missing["AntennaID"] = missing.get("AntennaID", 0) + 1
            antenna = self.default_antenna()
        if rssi is None:
            missing["PeakRSSI"] = missing.get("PeakRSSI", 0) + 1
        seen_at = now
        if micros is None:
            missing["a UTC timestamp"] = missing.get("a UTC timestamp", 0) + 1
        else:
            seen_at = int(micros) / 1e6
            if abs(seen_at - now) > _CLOCK_SKEW_S:
                self.anomaly("reader_clock", f"reader clock off by {seen_at - now:+.0f} s: "
                             "its reads are stamped with our time (set NTP on the reader)")
                seen_at = now
        antenna = int(antenna)
        if antenna and antenna not in self.antennas_seen:
            self.antennas_seen = self.antennas_seen | {antenna}  # copy on write (see info)
        return TagRead(
            epc=epc, reader=self.name, antenna=antenna,
            rssi_dbm=None if rssi is None else float(rssi), seen_at=seen_at,
            seen_count=max(1, int(count)) if count is not None else 1,
            tid=tid,
        )
