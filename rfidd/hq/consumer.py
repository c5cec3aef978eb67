"""The HQ consumer: every site's MQTT feed -> the HQ database, each event exactly once.

At-least-once into the database: paho's manual acknowledgements are on, and a QoS 1 message is
acknowledged (PUBACK) only after the transaction holding it has committed. A crash before the
commit leaves the message unacknowledged in the broker's session (clean_start=False + session
expiry), which redelivers it; the UNIQUE eventID makes the second copy a counted duplicate.

Several consumers share the load through MQTT 5 shared subscriptions ($share/{group}/...): the
broker gives each message to one member of the group. Site status is subscribed plainly (not
shared): retained messages are never delivered on a shared subscription, and every instance
may record the status (an idempotent upsert).

Threads: paho's network loop (callbacks only enqueue), one writer thread (batches, commits,
acknowledges). A PUBACK is only sent on the connection that delivered the message: packet ids
are per connection, and acknowledging an old id on a new connection could acknowledge another
message that was never stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.exc import DataError

from rfidd.hq.config import HqMqttConfig
from rfidd.hq.feed import FeedParser, _Incoming, route
from rfidd.hq.store import Batch, BatchResult, HqStore
from rfidd.mqtt_client import ClientSettings, MqttSetupError, build_client, connect

log = logging.getLogger(__name__)

NS = "rfidd"


class _Aborted(Exception):
    """stop() gave up on a batch the database keeps refusing."""


class HqConsumerError(Exception):
    """The consumer cannot be set up (unreadable password file...); says what and where."""


class HqMetrics:
    """Prometheus metrics of the consumer (own registry; labels bounded: kind)."""

    KINDS = ("epcis", "status", "alert", "report", "seq", "replay", "unknown")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "hq_messages", "MQTT messages received from the sites, by kind.", ["kind"],
            namespace=NS, registry=r,
        )
        self.messages_malformed = Counter(
            "hq_messages_malformed", "Messages skipped as unusable (logged), by kind.", ["kind"],
            namespace=NS, registry=r,
        )
        self.events_stored = Counter(
            "hq_events_stored", "EPCIS events stored (first copy).", namespace=NS, registry=r
        )
        self.events_duplicate = Counter(
            "hq_events_duplicate", "EPCIS events received again (same eventID), not stored.",
            namespace=NS, registry=r,
        )
        self.unknown_site = Counter(
            "hq_unknown_site_messages", "Events and messages from sites not registered at HQ "
            "(rfidd hq site add), not stored.", namespace=NS, registry=r,
        )
        self.sequence_lost = Counter(  # no label: per site, see the sequence_lost alert
            "hq_sequence_lost", "Events lost for good: sequence numbers a restored site "
            "skipped that HQ never received (each also stored as a sequence_lost alert).",
            namespace=NS, registry=r,
        )
        self.events_malformed = Counter(
            "hq_events_malformed", "EPCIS events rejected by validation (logged).",
            namespace=NS, registry=r,
        )
        self.db_errors = Counter(
            "hq_db_errors", "Batch commits that failed and were retried.", namespace=NS,
            registry=r,
        )
        self.batch_commit = Histogram(
            "hq_batch_commit_duration_seconds", "Time to store one batch.", namespace=NS,
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        self.queue_depth = Gauge(
            "hq_queue_depth", "Messages received but not yet committed.", namespace=NS,
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "hq_mqtt_connected", "1 while connected to the broker.", namespace=NS, registry=r
        )
        for kind in self.KINDS:
            self.messages.labels(kind)
            self.messages_malformed.labels(kind)


@dataclass(slots=True)
class ConsumerStats:
    messages: int = 0
    messages_malformed: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    events_malformed: int = 0
    site_messages_stored: int = 0
    batches: int = 0
    db_errors: int = 0
    acked: int = 0
    ack_skipped: int = 0  # delivered on a connection since lost: the broker redelivers them
    connects: int = 0
    by_site: dict[str, int] = field(default_factory=dict)


class HqConsumer:
    """Subscribes to every site's feed and stores it. `start()` returns at once.

    Timing constants are parameters so tests can shrink them.
    """

    def __init__(
        self,
        config: HqMqttConfig,
        store: HqStore,
        *,
        metrics: HqMetrics | None = None,
        batch_max_messages: int = 500,
        batch_max_s: float = 0.2,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 60,
        on_stored: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        if batch_max_messages < 1:
            raise ValueError("batch_max_messages must be at least 1")
        self.config = config
        self.store = store
        self.metrics = metrics or HqMetrics()
        self.batch_max_messages = batch_max_messages
        self.batch_max_s = batch_max_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.on_stored = on_stored  # eventIDs just committed (query subscriptions); no blocking

        self.prefix = config.topic_prefix
        # The same certificate checks and secret handling as the site link (credential:NAME,
        # CA file only when given, never the secret in a message). Always a persistent
        # session: what the sites publish while HQ is away waits in it.
        self.settings = ClientSettings.from_config(
            config.site_mqtt_config(), client_id=config.client_id, persistent_session=True,
            session_expiry_s=config.session_expiry_s, reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s, manual_ack=True,
            receive_maximum=config.receive_maximum, max_packet_bytes=config.max_message_bytes,
        )
        self.v5 = self.settings.v5
        self.tls = self.settings.tls is not None
        self.host, self.port = self.settings.host, self.settings.port

        self.stats = ConsumerStats()
        self._stats_lock = threading.Lock()
        self._parser = FeedParser(config, self.metrics, self.stats, self._stats_lock)
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._closing = False
        self._drained = threading.Event()
        self._abort = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._pending_subs: set[int] = set()
        self._client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------------ topics

    def subscriptions(self) -> list[str]:
        """Topic filters: shared (MQTT 5) for the feeds, plain for the retained status."""
        feeds = [f"{self.prefix}/+/epcis", f"{self.prefix}/+/alerts",
                 f"{self.prefix}/+/reports/+", f"{self.prefix}/+/replay"]
        if self.v5 and self.config.share_group:  # "": plain (kept over a broker restart)
            feeds = [f"$share/{self.config.share_group}/{f}" for f in feeds]
        return [*feeds, f"{self.prefix}/+/status", f"{self.prefix}/+/seq"]

    def _route(self, topic: str) -> tuple[str, str]:
        """topic -> (site, kind); ValueError for a topic outside the contract (feed.py)."""
        return route(self.prefix, topic)

    # ------------------------------------------------------------------ lifecycle

    def _make_client(self) -> mqtt.Client:
        try:
            client = build_client(self.settings)
        except MqttSetupError as exc:
            raise HqConsumerError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background (the broker may be down) and start the writer thread."""
        if not self.v5:
            log.warning(
                "MQTT %s has no shared subscriptions: this consumer subscribes plainly and "
                "receives every message; run a single instance", self.config.protocol,
            )
        self._client = self._make_client()
        connect(self._client, self.settings)
        self._writer = threading.Thread(target=self._run_writer, name="hq-writer", daemon=True)
        self._writer.start()
        self._client.loop_start()
        log.info("HQ consumer: %s:%d (MQTT %s%s) as %s, filters %s", self.host, self.port,
                 self.config.protocol, ", TLS" if self.tls else "", self.config.client_id,
                 ", ".join(self.subscriptions()))

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what was received, then disconnect; the session stays on the
        broker, so what is published meanwhile waits for the next start."""
        self._closing = True  # from now on on_message leaves messages unacknowledged
        if self._writer is not None:
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning("HQ writer still busy after %.1fs; leaving its batch unacknowledged",
                            timeout)
                self._abort.set()
                self._writer.join(5)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self.metrics.mqtt_connected.set(0)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish a command to a site (QoS 1); False when not connected (retry later)."""
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        info = client.publish(topic, payload, qos=1, retain=False)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def snapshot(self) -> ConsumerStats:
        with self._stats_lock:
            s = self.stats
            return ConsumerStats(
                s.messages, s.messages_malformed, s.events_stored, s.events_duplicate,
                s.events_malformed, s.site_messages_stored, s.batches, s.db_errors, s.acked,
                s.ack_skipped, s.connects, dict(s.by_site),
            )

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._ack_lock:
            self._generation += 1
        self._connected.set()
        self.metrics.mqtt_connected.set(1)
        with self._stats_lock:
            self.stats.connects += 1
        log.info("connected to %s:%d (session present: %s)", self.host, self.port,
                 getattr(flags, "session_present", None))
        opts = SubscribeOptions(qos=1)
        topics = [(t, opts) if self.v5 else (t, 1) for t in self.subscriptions()]
        rc, mid = client.subscribe(topics)  # type: ignore[arg-type]
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subs.add(mid)
        else:
            log.error("subscribe failed: %s", mqtt.error_string(rc))

    def _on_subscribe(
        self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        refused = [
            f"{topic}: {rc}" for topic, rc in zip(self.subscriptions(), reasons, strict=False)
            if rc.is_failure
        ]
        if refused:
            log.error("broker refused subscriptions (shared subscriptions need MQTT 5 and a "
                      "broker that supports them): %s", "; ".join(refused))
            return
        self._pending_subs.discard(mid)
        self._subscribed.set()

    def _on_disconnect(
        self, _c: Any, _u: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        # Before paho reconnects: from here on, acks for this connection's messages are void.
        with self._ack_lock:
            self._generation += 1
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._closing:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: the broker keeps it in our session
        self._queue.put(_Incoming(
            msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain),
            self._generation, datetime.now(UTC),
        ))
        self.metrics.queue_depth.set(self._queue.qsize())

    # ------------------------------------------------------------------ writer

    def _run_writer(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closing:
                    return
                continue
            msgs = [first]
            deadline = time.monotonic() + self.batch_max_s
            while len(msgs) < self.batch_max_messages:
                left = deadline - time.monotonic()
                try:
                    msgs.append(self._queue.get(timeout=left) if left > 0
                                else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process(msgs)
            except Exception:  # a bug here must not stop the feed; the batch stays unacked
                log.exception("HQ writer: batch of %d messages failed; they stay unacknowledged"
                              " and will be redelivered after a reconnect", len(msgs))
            self.metrics.queue_depth.set(self._queue.qsize())

    def _write(self, batch: Batch, n: int) -> BatchResult | None:
        """Commit, retrying transient failures (database down, deadlock) with backoff.

        A DataError (a value the database refuses, e.g. a NUL character in PostgreSQL text) is
        the data's fault, not the database's: it is raised for the caller to isolate.
        Raises _Aborted when stop() gives up while the database is still failing.
        """
        if not batch:
            return None
        delay = self.retry_min_s
        while True:
            t0 = time.perf_counter()
            try:
                result = self.store.write_batch(batch)
            except DataError:
                raise
            except Exception as exc:
                self.metrics.db_errors.inc()
                with self._stats_lock:
                    self.stats.db_errors += 1
                log.error("storing a batch of %d messages failed (retrying in %.1fs): %s",
                          n, delay, exc)
                if self._abort.wait(delay):
                    raise _Aborted from None
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.metrics.batch_commit.observe(time.perf_counter() - t0)
            return result

    def _process(self, msgs: list[_Incoming]) -> None:
        parts = [self._parser.build([m]) for m in msgs]  # parsed once, kept for isolation below
        batch = Batch(received_at=msgs[0].received_at)
        for part in parts:
            for site, head in part.heads.items():
                batch.heads[site] = max(head, batch.heads.get(site, 0))
            batch.events.extend(part.events)
            batch.statuses.extend(part.statuses)
            batch.site_messages.extend(part.site_messages)
            for site, at in part.seen.items():
                batch.saw(site, at)
        results: list[BatchResult | None] = []
        events = batch.events
        try:
            try:
                results.append(self._write(batch, len(msgs)))
            except DataError as exc:
                # Find the message(s) the database refuses; store the others.
                log.warning("database refused a batch (%s); storing its %d messages one by one",
                            str(exc).splitlines()[0], len(msgs))
                events = []
                for m, single in zip(msgs, parts, strict=True):
                    try:
                        results.append(self._write(single, 1))
                        events.extend(single.events)
                    except DataError as exc1:
                        self.metrics.messages_malformed.labels("epcis").inc()
                        with self._stats_lock:
                            self.stats.messages_malformed += 1
                        log.warning("skipped message on %s the database refuses: %s", m.topic,
                                    str(exc1).splitlines()[0])
        except _Aborted:
            return  # stopping: left unacknowledged, redelivered on the next start
        acked = skipped = 0
        with self._ack_lock:
            client = self._client
            for m in msgs:  # in arrival order, as MQTT requires
                if m.qos == 0:
                    continue
                if m.generation != self._generation or client is None:
                    skipped += 1
                    continue
                client.ack(m.mid, m.qos)
                acked += 1
        with self._stats_lock:
            s = self.stats
            s.messages += len(msgs)
            s.batches += 1
            s.acked += acked
            s.ack_skipped += skipped
            for result in results:
                if result is not None:
                    s.events_stored += result.stored
                    s.events_duplicate += result.duplicates
                    s.site_messages_stored += result.messages_stored
            for ev in events:
                s.by_site[ev.site] = s.by_site.get(ev.site, 0) + 1
        for result in results:
            if result is not None and self.on_stored is not None:
                self.on_stored(result.event_ids)
        for result in results:
            if result is not None:
                self.metrics.events_stored.inc(result.stored)
                self.metrics.events_duplicate.inc(result.duplicates)
                if result.lost:
                    self.metrics.sequence_lost.inc(result.lost)
                if result.rejected:
                    self.metrics.unknown_site.inc(result.rejected)
                    log.warning("dropped %d events/messages from unregistered sites (see "
                                "rfidd hq sites; register with rfidd hq site add)",
                                result.rejected)
