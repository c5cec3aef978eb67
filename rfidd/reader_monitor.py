"""What the site says about its readers: up or not, the retained status, the reader alerts.

One job: turn the drivers' state changes and the intake's last-report times into
`rfidd_reader_up` / `rfidd_reader_state`, the retained `readers/{reader}/status` payload
(published once per change), and three alerts:
- `reader_down`: not inventorying (offline, connecting, or connected_not_reading) for the
  down delay, once per down period;
- `reader_silent`: inventorying (ROSpec active) but no tag reported for the reader's silent
  delay. An empty field is legitimate, so this is an anomaly on a longer timer, never a
  reconnect; counted as `rfidd_reader_anomalies_total{kind="silent"}`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from readers.base import ReaderDriver, ReaderState
from rfidd.health import ServiceUnavailable
from rfidd.intake import ReaderActivity
from rfidd.metrics import Metrics

log = logging.getLogger("rfidd.readers")

# The retained status payload of each state: connecting is not up, so it reads "offline"
# (a reader retrying every few seconds must not republish on every attempt).
STATUS_PAYLOAD = {
    ReaderState.ONLINE: "online",
    ReaderState.CONNECTED_NOT_READING: "connected_not_reading",
    ReaderState.CONNECTING: "offline",
    ReaderState.OFFLINE: "offline",
}

AlertFactory = Callable[[str, dict[str, Any], str], Any]
RATE_WINDOW_S = 10.0
"""reads/s in `rfidd readers` is over about this long (from the samples of the tick)."""


QUIET_AFTER_S = 5.0
"""A reader with tags in its field reports several times a second: this long without a tag
from a reader that has read is shown as "no tag for N s" (a lost ROSpec is `online` until the
driver's verify_s check finds it; an emptied field shows the same, and says it truly)."""


class ReaderMonitor:
    """Owns reader states (the intake records them in `activity`, which this object owns)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        publish_status: Callable[[str, str], None] | None,
        make_alert: AlertFactory,
        emit_alerts: Callable[[list[Any]], object],
        down_alert_s: float,
        silent_after_s: Mapping[str, float],
        drivers: Mapping[str, ReaderDriver],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.activity: dict[str, ReaderActivity] = {}
        self._metrics = metrics
        self._publish = publish_status
        self._make_alert = make_alert
        self._emit = emit_alerts
        self._down_alert_s = down_alert_s
        self._silent_after = dict(silent_after_s)
        self._drivers = drivers
        self._clock = clock
        self._published: dict[str, str] = {}
        self._silent: dict[str, float] = {}  # reader -> last_report the silence was raised for
        self._rates: dict[str, deque[tuple[float, int]]] = {}  # reader -> (time, reads) samples
        self._lock = threading.Lock()  # on_state runs on reader threads, check on the tick
        self._state_gauges = {
            (name, st): metrics.reader_state.labels(name, st.value)
            for name in self._silent_after for st in ReaderState
        }

    # called on reader threads (through the intake) -----------------------------------------
    def on_state(self, reader: str, state: ReaderState, reason: str) -> None:
        """After the intake recorded the change: metrics now, the status once per change."""
        self._metrics.reader_up.labels(reader).set(1 if state is ReaderState.ONLINE else 0)
        for st in ReaderState:
            gauge = self._state_gauges.get((reader, st))
            if gauge is None:
                gauge = self._state_gauges[(reader, st)] = \
                    self._metrics.reader_state.labels(reader, st.value)
            gauge.set(1 if st is state else 0)
        payload = STATUS_PAYLOAD[state]
        with self._lock:
            if self._published.get(reader) == payload:
                return
            self._published[reader] = payload
        if self._publish is not None:
            self._publish(reader, payload)

    # called on the daemon's tick -----------------------------------------------------------
    def check(self, now: float | None = None, stopping: bool = False) -> None:
        """Ages, and the down / silent alerts (each once per episode)."""
        now = self._clock() if now is None else now
        alerts: list[Any] = []
        raised: list[tuple[str, str, float]] = []  # (reader, kind, silent mark) to re-arm
        for name, act in list(self.activity.items()):
            self._sample_rate(name, act, now)
            if act.last_report:
                self._metrics.reader_last_report_age.labels(name).set(now - act.last_report)
            if stopping:
                continue
            if (act.state is not ReaderState.ONLINE and not act.down_alerted
                    and now - act.since >= self._down_alert_s):
                act.down_alerted = True
                raised.append((name, "down", 0.0))
                alerts.append(self._make_alert("reader_down", {
                    "reader": name, "state": act.state.value, "reason": act.reason,
                    "since": _iso(act.since)}, f"reader_down:{name}:{act.since}"))
            silent_s = self._silent_after.get(name)
            if act.state is ReaderState.ONLINE and silent_s is not None and act.last_report \
                    and now - act.last_report >= silent_s \
                    and self._silent.get(name) != act.last_report:
                raised.append((name, "silent", self._silent.get(name, 0.0)))
                self._silent[name] = act.last_report
                log.warning("reader %s: inventorying but no tag reported for %.0f s (silent)",
                            name, now - act.last_report)
                alerts.append(self._make_alert("reader_silent", {
                    "reader": name, "silent_s": round(now - act.last_report, 1),
                    "threshold_s": silent_s, "last_report": _iso(act.last_report)},
                    f"reader_silent:{name}:{act.last_report}"))
        if not alerts:
            return
        try:
            self._emit(alerts)
        except ServiceUnavailable as exc:  # the outbox is in that database: next turn
            for name, kind, mark in raised:
                if kind == "down":
                    self.activity[name].down_alerted = False
                else:
                    self._silent[name] = mark
            log.warning("reader alerts not queued yet: %s", exc)
            return
        for name, kind, _mark in raised:
            if kind == "silent":
                self._metrics.reader_anomalies.labels(name, "silent").inc()

    def _sample_rate(self, name: str, act: ReaderActivity, now: float) -> None:
        with self._lock:
            q = self._rates.setdefault(name, deque())
            q.append((now, act.reads))
            while len(q) > 2 and now - q[1][0] >= RATE_WINDOW_S:
                q.popleft()

    def reads_per_s(self, reader: str, now: float | None = None) -> float | None:
        """Tag reads per second over the last RATE_WINDOW_S or so; None before two ticks."""
        now = self._clock() if now is None else now
        act = self.activity.get(reader)
        with self._lock:
            q = self._rates.get(reader)
            first = q[0] if q else None
        if act is None or first is None or now - first[0] <= 0:
            return None
        return round((act.reads - first[1]) / (now - first[0]), 1)

    def is_silent(self, reader: str) -> bool:
        act = self.activity.get(reader)
        return act is not None and act.state is ReaderState.ONLINE and \
            self._silent.get(reader) == act.last_report

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """`rfidd readers`: each reader's state and what its driver knows of the hardware."""
        out: dict[str, dict[str, Any]] = {}
        names = sorted(set(self._silent_after) | set(self.activity))
        now = self._clock()
        for name in names:
            act = self.activity.get(name) or ReaderActivity()
            quiet = now - act.last_report
            row: dict[str, Any] = {
                "state": act.state.value, "reason": act.reason,
                "silent": self.is_silent(name),
                "no_tag_s": round(quiet) if act.state is ReaderState.ONLINE and act.reads
                and act.last_report and quiet >= QUIET_AFTER_S else None,
                "since": _iso(act.since),
                "last_report": _iso(act.last_report) if act.last_report else None,
                "connects": act.connects,
                "reads_per_s": self.reads_per_s(name),
            }
            driver = self._drivers.get(name)
            info = getattr(driver, "info", None)
            if callable(info):
                try:
                    row.update(info())
                except Exception as exc:  # a driver's report must not break the listing
                    row["info_error"] = repr(exc)
            out[name] = row
        return out


    def finders(self) -> list[str]:
        """The readers with a "find this item" mode (handhelds), for the staff page."""
        # Serial drivers all have find(); only the TSL protocol has the mode.
        return sorted(n for n, d in self._drivers.items() if callable(getattr(d, "find", None))
                      and getattr(d, "protocol", "tsl") == "tsl")

    def find(self, reader: str, epc: str | None) -> dict[str, Any]:
        """Start (or stop, epc None) "find this item" on a handheld; ValueError names why not."""
        driver = self._drivers.get(reader)
        if driver is None:
            raise LookupError(f"no reader {reader!r} (readers: {', '.join(sorted(self._drivers))})")
        find = getattr(driver, "find", None)
        if not callable(find):
            raise ValueError(f"reader {reader} cannot find an item (a TSL handheld can)")
        if epc is not None:
            epc = epc.strip().upper()
            if not epc or len(epc) % 4 or any(c not in "0123456789ABCDEF" for c in epc):
                raise ValueError(f"EPC {epc[:40]!r} is not whole 16-bit words of hex")
        find(epc)
        return self.find_status(reader)

    def find_status(self, reader: str) -> dict[str, Any]:
        """The item looked for and the RSSI samples so far (louder = closer)."""
        driver = self._drivers.get(reader)
        finder = getattr(driver, "finder", None)
        if finder is None:
            raise LookupError(f"reader {reader!r} has no find mode")
        samples = list(finder.samples)
        return {"reader": reader, "epc": finder.epc,
                "samples": [{"at": _iso(t), "rssi_dbm": r} for t, r in samples[-50:]],
                "last_rssi_dbm": samples[-1][1] if samples else None,
                "best_rssi_dbm": max((r for _, r in samples if r is not None), default=None)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
