"""Sequence gaps: which of a site's events HQ lacks, and the loop that asks for them again.

Every site numbers its events 1, 2, 3... and announces (retained, on `{site}/seq`) the
highest number it has had acknowledged by the broker. A PUBACK is the broker's receipt, not
HQ's: a broker that dies before saving loses acknowledged messages. Whatever HQ lacks up to
the announced head is a gap; once a gap has been open longer than the grace time (events in
flight are not lost), HQ publishes `cmd/replay` with the missing ranges, and again every retry
interval until none remains. A gap open longer than the alert time is logged as an error,
stored as an alert of the site, and shown by the `rfidd_hq_sequence_gap_oldest_seconds` gauge.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Connection, Engine, func, select

from rfidd.hq.store import hq_events, hq_site_messages, hq_sites, utc

log = logging.getLogger(__name__)

MAX_RANGES = 1000  # what a site accepts in one cmd/replay

Publish = Callable[[str, bytes], bool]


@dataclass(frozen=True, slots=True)
class SiteSequence:
    """What HQ holds of one site's numbered events."""

    site: str
    published_through: int | None  # the site's head; None: never announced
    contiguous: int  # every event 1..contiguous is held
    gaps: tuple[tuple[int, int], ...]  # missing ranges (inclusive) up to the head
    gap_since: datetime | None

    @property
    def missing(self) -> int:
        return sum(b - a + 1 for a, b in self.gaps)

    def to_json(self) -> dict[str, Any]:
        return {
            "published_through": self.published_through,
            "contiguous_seq": self.contiguous,
            "missing": self.missing,
            "gaps": [list(g) for g in self.gaps],
            "gap_since": self.gap_since.isoformat() if self.gap_since else None,
        }


def find_gaps(conn: Connection, site: str, contiguous: int, head: int,
              limit: int = MAX_RANGES, *, honour_skips: bool = True) -> list[tuple[int, int]]:
    """Missing numbers in (contiguous, head], as at most `limit` inclusive ranges; without
    the numbers the site declared skipped (rfidd.hq.skips) unless `honour_skips` is False."""
    if head <= contiguous:
        return []
    if honour_skips:
        from rfidd.hq.skips import skip_ranges, without_skips

        skips = skip_ranges(conn, site)
        if skips:
            return without_skips(find_gaps(conn, site, contiguous, head, limit,
                                           honour_skips=False), skips)[:limit]
    e = hq_events
    in_range = (e.c.site == site, e.c.seq > contiguous, e.c.seq <= head)
    first = conn.execute(select(func.min(e.c.seq)).where(*in_range)).scalar()
    if first is None:
        return [(contiguous + 1, head)]
    gaps: list[tuple[int, int]] = []
    if first > contiguous + 1:
        gaps.append((contiguous + 1, first - 1))
    sub = select(
        e.c.seq.label("seq"), func.lead(e.c.seq).over(order_by=e.c.seq).label("nxt")
    ).where(*in_range).subquery()
    rows = conn.execute(
        select(sub.c.seq, sub.c.nxt)
        .where((sub.c.nxt.is_(None)) | (sub.c.nxt > sub.c.seq + 1))
        .order_by(sub.c.seq).limit(limit)
    )
    for seq, nxt in rows:
        if nxt is None:
            if seq < head:
                gaps.append((seq + 1, head))
        else:
            gaps.append((seq + 1, nxt - 1))
    return gaps[:limit]


def site_sequences(engine: Engine, sites: list[str] | None = None) -> list[SiteSequence]:
    """The sequence state of every site (or of `sites`), gaps included."""
    stmt = select(hq_sites.c.site, hq_sites.c.published_through, hq_sites.c.contiguous_seq,
                  hq_sites.c.gap_since).order_by(hq_sites.c.site)
    if sites is not None:
        stmt = stmt.where(hq_sites.c.site.in_(sites))
    out = []
    with engine.connect() as conn:
        for site, head, contiguous, since in conn.execute(stmt).all():
            c = int(contiguous or 0)
            gaps = find_gaps(conn, site, c, int(head)) if head is not None else []
            out.append(SiteSequence(site, head, c, tuple(gaps), utc(since)))
    return out


class GapMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hq_replay_requests", "cmd/replay requests published to sites to fill gaps.",
            namespace="rfidd", registry=registry)
        self.alerts = Counter(
            "hq_sequence_gap_alerts", "Gaps that stayed open longer than sites.gap_alert_s.",
            namespace="rfidd", registry=registry)
        self.sites_with_gaps = Gauge(
            "hq_sites_with_gaps", "Sites of which HQ lacks events up to their announced head.",
            namespace="rfidd", registry=registry)
        self.missing = Gauge(
            "hq_missing_events", "Events HQ lacks up to the sites' announced heads (all sites).",
            namespace="rfidd", registry=registry)
        self.oldest = Gauge(
            "hq_sequence_gap_oldest_seconds", "Age of the oldest open gap (0: none).",
            namespace="rfidd", registry=registry)


class GapRepairer:
    """Checks every site's sequence and asks for what is missing, on its own thread."""

    def __init__(
        self,
        engine: Engine,
        publish: Publish,
        topic_prefix: str,
        registry: CollectorRegistry,
        *,
        registered_only: bool = False,
        check_interval_s: float = 5.0,
        grace_s: float = 10.0,
        retry_s: float = 30.0,
        alert_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.publish = publish
        self.prefix = topic_prefix
        self.metrics = GapMetrics(registry)
        self.registered_only = registered_only
        self.check_interval_s = check_interval_s
        self.grace_s = grace_s
        self.retry_s = retry_s
        self.alert_s = alert_s
        self.clock = clock
        self._asked: dict[str, float] = {}  # site -> when we last asked (this instance)
        self._alerted: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hq-gaps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.check_once()
            except Exception:  # the database may be down: try again next round
                log.exception("gap check failed; retrying")

    def check_once(self) -> list[str]:
        """One round; returns the sites asked for a replay."""
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC)
        asked: list[str] = []
        total_missing = 0
        oldest = 0.0
        with_gaps = 0
        stmt = select(hq_sites.c.site, hq_sites.c.published_through, hq_sites.c.contiguous_seq,
                      hq_sites.c.gap_since).where(hq_sites.c.published_through.is_not(None))
        if self.registered_only:
            stmt = stmt.where(hq_sites.c.registered_at.is_not(None))
        with self.engine.begin() as conn:
            for site, head, contiguous, since in conn.execute(stmt.order_by(hq_sites.c.site)):
                gaps = find_gaps(conn, site, int(contiguous or 0), int(head))
                if not gaps:
                    if since is not None:
                        self._closed(conn, site, utc(since), stamp)
                    continue
                with_gaps += 1
                total_missing += sum(b - a + 1 for a, b in gaps)
                since_t = utc(since)
                if since_t is None:
                    conn.execute(hq_sites.update().where(hq_sites.c.site == site)
                                 .values(gap_since=stamp))
                    since_t = stamp
                age = max(0.0, now - since_t.timestamp())  # microsecond rounding
                oldest = max(oldest, age)
                due = now - self._asked.get(site, -1e18) >= self.retry_s
                if age >= self.grace_s and due and self._ask(site, gaps, now):
                    asked.append(site)
                if age >= self.alert_s and site not in self._alerted:
                    self._alert(conn, site, gaps, since_t, stamp)
        self.metrics.sites_with_gaps.set(with_gaps)
        self.metrics.missing.set(total_missing)
        self.metrics.oldest.set(oldest)
        return asked

    def _ask(self, site: str, gaps: list[tuple[int, int]], now: float) -> bool:
        body = {"ranges": [list(g) for g in gaps[:MAX_RANGES]],
                "request_id": f"gap-{int(now * 1000)}"}
        if not self.publish(f"{self.prefix}/{site}/cmd/replay", json.dumps(body).encode()):
            log.warning("cannot ask %s for a replay now (not connected); retrying", site)
            return False
        self._asked[site] = now
        self.metrics.requests.inc()
        n = sum(b - a + 1 for a, b in gaps)
        log.info("asked %s to replay %d missing events in %d ranges (first %d-%d)", site, n,
                 len(gaps), gaps[0][0], gaps[0][1])
        return True

    def _alert(self, conn: Connection, site: str, gaps: list[tuple[int, int]],
               since: datetime, stamp: datetime) -> None:
        self._alerted.add(site)
        self.metrics.alerts.inc()
        n = sum(b - a + 1 for a, b in gaps)
        log.error("site %s: %d events still missing after %.0f s (first gap %d-%d); is the site "
                  "running and subscribed to cmd/replay?", site, n,
                  (stamp - since).total_seconds(), gaps[0][0], gaps[0][1])
        self._store_alert(conn, site, {
            "type": "sequence_gap", "site": site, "missing": n,
            "gaps": [list(g) for g in gaps[:20]], "since": since.isoformat(),
            "time": stamp.isoformat(),
        }, stamp)

    def _closed(self, conn: Connection, site: str, since: datetime | None,
                stamp: datetime) -> None:
        conn.execute(hq_sites.update().where(hq_sites.c.site == site).values(gap_since=None))
        self._asked.pop(site, None)
        if site in self._alerted:
            self._alerted.discard(site)
            log.info("site %s: every missing event received again", site)
            self._store_alert(conn, site, {
                "type": "sequence_gap_closed", "site": site,
                "since": since.isoformat() if since else None, "time": stamp.isoformat(),
            }, stamp)

    def _store_alert(self, conn: Connection, site: str, payload: dict[str, Any],
                     stamp: datetime) -> None:
        from rfidd.hq.store import SiteMessageRow

        row = SiteMessageRow(site, "alert", payload, stamp)
        conn.execute(hq_site_messages.insert().values(
            site=site, kind="alert", digest=row.digest, payload=payload, received_at=stamp))
