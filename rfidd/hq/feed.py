"""What the HQ consumer makes of one site message: its route and its rows in a `Batch`.

Pure parsing, no I/O: the topic says which site and feed (the MQTT contract in DESIGN.md), the
payload becomes EPCIS events, a site status, a sequence head or a stored site message. A bad
message is logged, counted (`rfidd_hq_messages_malformed_total{kind}`) and skipped; the others
of its batch are unaffected. The consumer (consumer.py) batches, commits and acknowledges.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rfidd.hq.config import HqMqttConfig
from rfidd.hq.documents import DocumentError, parse_document
from rfidd.hq.skips import parse_skips
from rfidd.hq.store import Batch, SiteMessageRow, StatusRow

if TYPE_CHECKING:
    from rfidd.hq.consumer import ConsumerStats, HqMetrics

log = logging.getLogger("rfidd.hq.consumer")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_STATUSES = {"online", "offline"}


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int
    received_at: datetime


def route(prefix: str, topic: str) -> tuple[str, str]:
    """topic -> (site, kind); ValueError for a topic outside the contract."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise ValueError(f"topic {topic!r} is outside {head}")
    parts = topic[len(head):].split("/")
    site = parts[0]
    if not _SEGMENT.match(site):
        raise ValueError(f"topic {topic!r}: {site!r} is not a site id")
    rest = parts[1:]
    if rest in (["epcis"], ["status"], ["seq"], ["replay"]):
        return site, rest[0]
    if rest == ["alerts"]:
        return site, "alert"
    if len(rest) == 2 and rest[0] == "reports" and _SEGMENT.match(rest[1]):
        return site, f"report/{rest[1]}"
    raise ValueError(f"topic {topic!r} is not a feed topic")


class FeedParser:
    """Messages -> a `Batch`, on the consumer's writer thread. It counts what it skips into
    the consumer's metrics and stats (under the consumer's stats lock)."""

    def __init__(self, config: HqMqttConfig, metrics: HqMetrics, stats: ConsumerStats,
                 stats_lock: threading.Lock) -> None:
        self.config = config
        self.prefix = config.topic_prefix
        self.metrics = metrics
        self.stats = stats
        self._stats_lock = stats_lock

    def _route(self, topic: str) -> tuple[str, str]:
        return route(self.prefix, topic)

    def build(self, msgs: list[_Incoming]) -> Batch:
        batch = Batch(received_at=msgs[0].received_at)
        for m in msgs:
            self._classify(m, batch)
        return batch

    def _classify(self, msg: _Incoming, batch: Batch) -> None:
        """Add one message to the batch; a bad one is logged, counted and skipped."""
        kind = "unknown"
        try:
            site, kind = self._route(msg.topic)
            label = kind.split("/", 1)[0]
            self.metrics.messages.labels(label).inc()
            if len(msg.payload) > self.config.max_message_bytes:
                raise ValueError(f"{len(msg.payload)} bytes, over mqtt.max_message_bytes")
            if kind == "status":
                self._add_status(msg, site, batch)
                return
            if kind == "seq":
                self._add_head(msg, site, batch)
                return
            if not msg.retain:
                batch.saw(site, msg.received_at)
            if kind == "epcis":
                self._add_epcis(msg, site, batch)
            else:
                payload = json.loads(msg.payload)
                if not isinstance(payload, dict | list):
                    raise ValueError(f"payload is JSON {type(payload).__name__}, expected an "
                                     "object")
                batch.site_messages.append(
                    SiteMessageRow(site, kind, payload, msg.received_at)
                )
        except Exception as exc:  # pure parsing, no I/O: any failure is the message's fault
            label = kind.split("/", 1)[0]
            if label not in self.metrics.KINDS:
                label = "unknown"
            self.metrics.messages_malformed.labels(label).inc()
            with self._stats_lock:
                self.stats.messages_malformed += 1
            log.warning("skipped malformed message on %s (%d bytes): %s", msg.topic,
                        len(msg.payload), exc)

    def _add_status(self, msg: _Incoming, site: str, batch: Batch) -> None:
        if not msg.payload:
            return  # a retained status being cleared
        status = msg.payload.decode("utf-8").strip()
        if status not in _STATUSES:
            raise ValueError(f"status {status[:40]!r}, expected online or offline")
        batch.statuses.append(StatusRow(site, status, msg.received_at, msg.retain))
        if not msg.retain:
            batch.saw(site, msg.received_at)

    def _add_head(self, msg: _Incoming, site: str, batch: Batch) -> None:
        """The site's retained sequence head: every event up to it was sent."""
        if not msg.payload:
            return  # a retained head being cleared
        body = json.loads(msg.payload)
        head = body.get("published_through") if isinstance(body, dict) else None
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < 2**63:
            raise ValueError(f"sequence head {str(head)[:40]!r} is not a number >= 0")
        # A restored site's skipped numbers: HQ stops waiting for them, reports what it lacks.
        batch.site_messages.extend(parse_skips(site, body.get("skipped"), msg.received_at))
        batch.heads[site] = max(head, batch.heads.get(site, 0))

    def _add_epcis(self, msg: _Incoming, site: str, batch: Batch) -> None:
        try:
            doc = parse_document(msg.payload, site)
        except DocumentError as exc:
            raise ValueError(f"EPCIS document from {site}: {exc}") from None
        if doc.errors:
            self.metrics.events_malformed.inc(len(doc.errors))
            with self._stats_lock:
                self.stats.events_malformed += len(doc.errors)
            for err in doc.errors[:5]:
                log.warning("skipped malformed event from %s on %s: %s", site, msg.topic, err)
            if len(doc.errors) > 5:
                log.warning("... and %d more malformed events in that document",
                            len(doc.errors) - 5)
        batch.events.extend(doc.events)
