"""The site's own health alerts: the outbox backlog and database outages.

One job: watch the outbox and the database and tell HQ and systemd. Reader alerts are the
reader monitor's (rfidd/reader_monitor.py). While the database is down its alert goes straight
to the broker (the outbox lives in that database); once it is back, a durable alert with the
outage's span goes through the outbox.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from inventory.events import stable_event_id
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import ServiceUnavailable
from rfidd.metrics import Metrics
from rfidd.store import repo

log = logging.getLogger("rfidd")


class StatusNotifier(Protocol):
    def status(self, text: str) -> None: ...


class DirectPublisher(Protocol):
    def publish_now(self, suffix: str, payload: dict[str, Any]) -> bool: ...


class SiteHealth:
    """Outbox backlog and database outage alerts (see the module docstring)."""

    def __init__(self, config: Config, ctx: ServiceContext, metrics: Metrics,
                 notifier: StatusNotifier, hq: DirectPublisher | None) -> None:
        self.config = config
        self.ctx = ctx
        self.metrics = metrics
        self.notifier = notifier
        self.hq = hq
        self.outbox_depth = 0
        self._backlog_alerted = False
        # (since, first reason, latest reason) while it is down
        self._db_down: tuple[float, str, str] | None = None

    def on_outbox_depth(self, depth: int) -> None:
        """From the HQ link's publisher, which keeps the outbox gauges while MQTT is on (the
        scheduler job below is then not needed: one query instead of two, none at idle)."""
        self.outbox_depth = depth

    def refresh_outbox(self) -> None:
        """Scheduler job without an HQ link: the outbox gauges (skipped while the database is
        down)."""
        if not self.ctx.health.up:
            return
        with self.ctx.db.session() as s:
            depth, oldest = repo.outbox_stats(s)
        self.outbox_depth = depth
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest_age.set(oldest)

    def check(self, now: float) -> None:
        """Supervisor turn: an outbox backlog past its bound is one alert until it drains; a
        database outage keeps systemd's STATUS= current."""
        if self._db_down is not None:
            since, _first, reason = self._db_down
            self.notifier.status(f"database unavailable for {now - since:.0f} s, retrying: "
                                 f"{reason}")
        depth, limit = self.outbox_depth, self.config.mqtt.outbox_alert_rows
        if depth < limit * 0.9:
            self._backlog_alerted = False
        if depth < limit or self._backlog_alerted:
            return
        self._backlog_alerted = True
        alert = self.alert("outbox_backlog", {"rows": depth, "threshold": limit},
                            f"outbox_backlog:{now}")
        try:
            self.ctx.emit(messages=[alert])
        except ServiceUnavailable as exc:  # the outbox is in that database: next turn
            self._backlog_alerted = False
            log.warning("alerts not queued yet: %s", exc)

    def on_database(self, up: bool, reason: str) -> None:
        """From the ingest thread, between batches (it holds no lock here)."""
        now = time.time()
        site = self.config.site.id
        if not up and self._db_down is not None:  # still down, for another reason now
            self._db_down = (self._db_down[0], self._db_down[1], reason)
            self.notifier.status(f"database unavailable, retrying: {reason}")
            return
        if not up:
            self._db_down = (now, reason, reason)
            self.notifier.status(f"database unavailable, retrying: {reason}")
            self.metrics.alerts.labels("database_unavailable").inc()
            if self.hq is not None and self.config.mqtt.enabled:
                self.hq.publish_now("alerts", {"type": "database_unavailable", "site": site,
                                               "at": _iso(now), "reason": reason})
            return
        if self._db_down is None:
            return
        since, why, last = self._db_down
        self._db_down = None
        self.notifier.status(f"database back after {now - since:.0f} s")
        msg = repo.Message("alert", "alerts", {
            "type": "database_unavailable", "site": site, "at": _iso(since),
            "until": _iso(now), "down_s": round(now - since, 1), "reason": why,
            **({"last_reason": last} if last != why else {}),
        }, event_id=stable_event_id(site, "database_unavailable", since))
        try:
            self.ctx.emit(messages=[msg])
        except Exception as exc:
            log.warning("database alert not queued: %s", exc)

    def alert(self, kind: str, body: dict[str, Any], key: str) -> repo.Message:
        """An alert message for the outbox, counted in rfidd_alerts_total{kind}."""
        self.metrics.alerts.labels(kind).inc()
        log.warning("alert %s: %s", kind, body)
        payload = {"type": kind, "site": self.config.site.id, "at": _iso(time.time()), **body}
        return repo.Message("alert", "alerts", payload,
                            event_id=stable_event_id(self.config.site.id, key))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
