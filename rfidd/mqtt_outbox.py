"""The outbox side of the HQ link: fill paho's window from the outbox, mark acknowledged rows,
announce the sequence head (the status/last-will and the command side stay in rfidd.mqtt).

`OutboxPublisher` is a mixin of `rfidd.mqtt.HqLink`: it runs on the link's publisher thread
and reads the link's state declared below; only it touches `_inflight`, `_cursor`, `_head`.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.store import repo, sequence
from rfidd.store.db import Database

log = logging.getLogger("rfidd.mqtt")

SEQ_FIELD = "rfidd:seq"  # the site's gap-free sequence number, in every EPCIS event published

# (events as stored in the outbox, creation time, sender) -> EPCISDocument (dict or JSON text).
DocumentBuilder = Callable[[list[dict[str, Any]], datetime, str], Mapping[str, Any] | str | bytes]


@dataclass(slots=True)
class _InFlight:
    ids: list[int]
    stream: str
    first_id: int


@dataclass(slots=True)
class LinkStats:
    published_messages: int = 0
    acked_rows: int = 0
    failed_rows: int = 0
    rejected_acks: int = 0
    commands_ok: int = 0
    commands_failed: int = 0
    commands_rejected: int = 0
    connects: int = 0
    disconnects: int = 0
    refusals: int = 0  # CONNACKs refusing the connection (bad password, not authorised)
    by_stream: dict[str, int] = field(default_factory=dict)


class OutboxPublisher:
    """The publisher thread's work: outbox rows out, PUBACKs in, the retained head."""

    config: MqttConfig
    site_id: str
    db: Database
    metrics: Metrics
    document_builder: DocumentBuilder
    sender: str
    max_inflight: int
    poll_interval_s: float
    stats_interval_s: float
    rejected_retry_s: float
    head_interval_s: float
    base: str
    epcis_topic: str
    head_topic: str
    stats: LinkStats
    _stop: threading.Event
    _wake: threading.Event
    _connected: threading.Event
    _closing: bool
    _generation: int
    _acks: collections.deque[tuple[int, bool, str]]
    _inflight: dict[int, _InFlight]
    _unmarked: list[_InFlight]
    _cursor: int
    _retry_at: float
    _next_stats: float
    _stats_owed: bool
    _depth: int
    _head: tuple[int, int] | None
    _head_mark: int
    on_outbox_depth: Callable[[int], None] | None
    _next_head: float
    _client: mqtt.Client | None

    def _run_publisher(self) -> None:
        while True:
            try:
                self._process_acks()
                # Only stop() ends publishing: the daemon's stop event is set first, while
                # ingest still commits its last batch, which must reach HQ too.
                if self._closing:
                    return
                # One reading of the connection per round: read twice, a connection made in
                # between announced the head before the rows it was issued with.
                connected = self._connected.is_set()
                if connected and time.monotonic() >= self._retry_at:
                    self._fill_window()
                if connected:
                    self._publish_head()
                self._update_stats()
            except Exception:  # a database hiccup must not end publishing for good
                log.exception("outbox publisher error; retrying")
                self._stop.wait(min(1.0, self.poll_interval_s) or 0.01)
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        """Until the next thing due without a wake-up: a refused row's retry, the head's next
        announcement once it moved, the gauges while rows are pending (their age grows) or an
        update the interval held back; else `poll_interval_s`. Commits (notify), PUBACKs and
        connections wake the thread, so an idle site's outbox costs no query between polls."""
        now = time.monotonic()
        wait = self.poll_interval_s
        if self._retry_at > now:
            wait = min(wait, self._retry_at - now)
        if self._head_mark != self._head_progress() and self._connected.is_set():
            wait = min(wait, self._next_head - now)
        if self._stats_owed or self._depth > 0:
            wait = min(wait, self._next_stats - now)
        return max(0.0, wait)

    def _head_progress(self) -> int:
        """Changes the sequence head may show: rows acknowledged or failed so far."""
        return self.stats.acked_rows + self.stats.failed_rows

    def _process_acks(self) -> None:
        done: list[_InFlight] = []
        rejected: list[tuple[_InFlight, str]] = []
        while self._acks:
            mid, ok, reason = self._acks.popleft()
            f = self._inflight.pop(mid, None)
            if f is None:
                continue  # a status message, not an outbox row
            if ok:
                done.append(f)
            else:
                rejected.append((f, reason))
        if done or self._unmarked:
            # Kept until the write succeeds: a failed mark_sent must not forget acked rows.
            self._unmarked.extend(done)
            done, self._unmarked = self._unmarked, []
            ids = [i for f in done for i in f.ids]
            try:
                with self.db.write() as s:
                    repo.mark_sent(s, ids)
            except Exception:
                self._unmarked = done
                raise
            for f in done:
                self.metrics.published.labels(f.stream).inc()
                self.stats.by_stream[f.stream] = self.stats.by_stream.get(f.stream, 0) + 1
            self.stats.published_messages += len(done)
            self.stats.acked_rows += len(ids)
        for f, reason in rejected:
            # The broker refused (quota, authorisation...): keep the rows pending and retry
            # from the first refused one after a pause.
            self.stats.rejected_acks += 1
            log.error("broker refused outbox rows %d..%d (%s): %s; retrying in %.0f s",
                      f.ids[0], f.ids[-1], f.stream, reason, self.rejected_retry_s)
            self._cursor = min(self._cursor, f.first_id - 1)
            self._retry_at = time.monotonic() + self.rejected_retry_s

    def _fill_window(self) -> None:
        client = self._client
        assert client is not None
        per_doc = self.config.max_events_per_document
        while len(self._inflight) < self.max_inflight and self._connected.is_set():
            room = self.max_inflight - len(self._inflight)
            with self.db.session() as s:
                rows = repo.outbox_pending(s, min(room * per_doc, 5000), after_id=self._cursor)
            if not rows:
                return
            groups: list[list[repo.OutboxRow]] = []
            for r in rows:
                if len(groups) >= room:
                    break
                g = groups[-1] if groups else None
                if (r.stream == repo.EPCIS_STREAM and g is not None
                        and g[0].stream == repo.EPCIS_STREAM and len(g) < per_doc):
                    g.append(r)
                else:
                    groups.append([r])
            for g in groups:
                if not self._publish_group(client, g):
                    return

    def _publish_group(self, client: mqtt.Client, rows: list[repo.OutboxRow]) -> bool:
        """Publish one message; False when the connection went away (stop filling)."""
        stream = rows[0].stream
        if stream == repo.EPCIS_STREAM:
            topic = self.epcis_topic
            payload = self._build_epcis(rows)
            if payload is None:
                if len(rows) > 1:
                    # Isolate the bad row(s): one document per event.
                    return all(self._publish_group(client, [r]) for r in rows)
                self._cursor = max(self._cursor, rows[-1].id)
                return True
        else:
            topic = f"{self.base}/{rows[0].topic}"
            payload = rows[0].payload.encode()
        try:
            info = client.publish(topic, payload, qos=1, retain=False)
        except ValueError as exc:  # payload too large for MQTT, bad topic
            self._fail(rows, f"cannot publish on {topic}: {exc}")
            self._cursor = max(self._cursor, rows[-1].id)
            return True
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish on %s returned %s; will retry", topic, mqtt.error_string(info.rc))
            return False
        # paho queues it even without a connection (NO_CONN) and sends it on reconnect.
        self._inflight[info.mid] = _InFlight([r.id for r in rows], stream, rows[0].id)
        self._cursor = max(self._cursor, rows[-1].id)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _build_epcis(self, rows: list[repo.OutboxRow]) -> bytes | None:
        events: list[dict[str, Any]] = []
        for r in rows:
            try:
                ev = json.loads(r.payload)
                if not isinstance(ev, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if len(rows) == 1:
                    self._fail([r], f"outbox row {r.id} ({r.event_id}): bad event JSON: {exc}")
                return None  # a group is retried one row at a time to isolate this one
            if r.seq is not None:
                ev[SEQ_FIELD] = r.seq
            events.append(ev)
        try:
            doc = self.document_builder(events, datetime.now(UTC), self.sender)
            if isinstance(doc, bytes):
                return doc
            if isinstance(doc, str):
                return doc.encode()
            return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        except Exception as exc:  # a bad event must not block the whole feed
            if len(rows) == 1:
                self._fail(rows, f"outbox row {rows[0].id} ({rows[0].event_id}): EPCIS document "
                           f"cannot be built: {type(exc).__name__}: {exc}")
            else:
                log.warning("EPCIS document of rows %d..%d cannot be built (%s); isolating",
                            rows[0].id, rows[-1].id, exc)
            return None

    def _publish_head(self, force: bool = False) -> mqtt.MQTTMessageInfo | None:
        """Retained sequence head, after each reconnect and at most every head_interval_s when
        it moved (`force`: now, at a clean stop): the broker may lose what it acknowledged, HQ
        then asks for a replay. It also says the highest number taken (a restored site
        continues above it) and the numbers skipped after a restore (HQ does not wait for
        them)."""
        client = self._client
        now = time.monotonic()
        if client is None or not self._connected.is_set():
            return None
        generation = self._generation
        progress = self._head_progress()
        if (not force and self._head is not None and self._head[0] == generation
                and (now < self._next_head or progress == self._head_mark)):
            return None  # too soon, or nothing acknowledged since: the head did not move
        self._head_mark = progress
        with self.db.session() as s:
            seq = repo.published_through(s)
            last = sequence.last_seq(s)
            skipped = sequence.skips(s)
        self._next_head = now + self.head_interval_s
        if self._head == (generation, seq) and not force:
            return None
        body: dict[str, Any] = {
            "site": self.site_id, "published_through": seq, "last_seq": last,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if skipped:
            body["skipped"] = [list(x) for x in skipped]
        if force:  # a clean stop: nothing is numbered after it until the next start
            body["final"] = True
        info = client.publish(self.head_topic, json.dumps(body).encode(), qos=1, retain=True)
        self._head = (generation, seq)
        return info

    def _fail(self, rows: list[repo.OutboxRow], error: str) -> None:
        log.error("%s; row kept in the outbox as failed", error)
        with self.db.write() as s:
            repo.mark_failed(s, [r.id for r in rows], error)
        self.stats.failed_rows += len(rows)

    def _update_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_stats:
            self._stats_owed = True  # _idle_wait wakes the thread for it
            return
        self._stats_owed = False
        self._next_stats = now + self.stats_interval_s
        with self.db.session() as s:
            depth, age = repo.outbox_stats(s)
        self._depth = depth
        if self.on_outbox_depth is not None:
            self.on_outbox_depth(depth)
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest_age.set(age)
