"""Query subscriptions (GS1 EPCIS 2.0): a named query's results pushed as events are stored.

Why in-process and by eventID: the process that stored an event (consumer batch or capture)
is the only one that knows it is new (eventID dedup is the database's), so it alone notifies:
with several HQ instances every event is pushed once, by the instance that stored it.
The storing thread only `offer()`s the new eventIDs to a bounded inbox and returns; the hub's
thread runs each subscribed query restricted to those eventIDs (the same SQL as GET /events,
so a subscriber sees exactly what a query would) and hands each listener its document:
a webhook has its own thread and bounded queue, so a slow or failing receiver retries with
backoff without delaying storage or any other subscriber; a WebSocket gets it on its
connection's event loop. Scheduled subscriptions run their query over the recordTime window
since their last run, at the times the schedule names (GS1's cron-like fields).

initialRecordTime: a new subscription first gets the stored events recorded since then, page
by page, then the live ones; attached before that replay, it misses nothing committed
meanwhile, and the eventIDs sent around the replay are remembered a few seconds (no repeat).
A stream webhook's position (`cursor_at`: all recorded before it delivered, less the seconds
batches take to commit) is saved after each delivery: after a restart it replays from there,
so what was queued in memory is sent again, not lost (at least once; dedup by eventID).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Boolean, Column, Engine, Index, String, Table, select, update

from rfidd.hq import epcis_query as eq
from rfidd.hq.store import Json, Time, hq_events, hq_queries, metadata, utc

log = logging.getLogger(__name__)

hq_subscriptions = Table(
    "hq_subscriptions",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("query_name", String(128), nullable=False),
    Column("dest", String(2048), nullable=False),
    Column("secret", String(512)),  # the client's signatureToken: signs, never shown again
    Column("stream", Boolean, nullable=False),
    Column("schedule", Json),
    Column("report_if_empty", Boolean, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("last_notified_at", Time),
    Column("cursor_at", Time),  # scheduled: results sent for recordTime before this
    Index("ix_hq_subscriptions_query", "query_name"),
)

SCHEDULE_FIELDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23),
                   "dayOfMonth": (1, 31), "month": (1, 12), "dayOfWeek": (1, 7)}
_ELEMENT = re.compile(r"^(?:(\d+)|\[(\d+)-(\d+)\])$")
SIGNATURE_HEADER = "GS1-Signature"
Document = dict[str, Any]
# (the document, the recordTime before which everything is in it or was sent before; None:
# no position, e.g. a scheduled run, whose cursor the hub saves itself)
Deliver = Callable[[Document, datetime | None], None]


class SubscriptionError(ValueError):
    """A subscription request the server cannot honour; `field` names what."""

    def __init__(self, field_: str, message: str) -> None:
        super().__init__(message)
        self.field = field_


def parse_schedule(raw: Mapping[str, Any]) -> dict[str, str]:
    """GS1's schedule fields (a number, a range [a-b], or a comma list of these) checked
    against their ranges; SubscriptionError names the first bad one."""
    out: dict[str, str] = {}
    for name, value in raw.items():
        if name not in SCHEDULE_FIELDS:
            raise SubscriptionError(f"schedule/{name}", f"schedule field {name!r}: one of "
                                    f"{', '.join(SCHEDULE_FIELDS)}")
        text = str(value).strip()
        lo, hi = SCHEDULE_FIELDS[name]
        for element in text.split(","):
            m = _ELEMENT.match(element.strip())
            nums = [int(x) for x in m.groups() if x is not None] if m else []
            if not nums or not all(lo <= n <= hi for n in nums) or nums != sorted(nums):
                raise SubscriptionError(f"schedule/{name}", f"schedule {name} {text!r}: "
                                        f"numbers {lo}-{hi}, ranges [a-b], comma-separated")
        out[name] = text
    if not out:
        raise SubscriptionError("schedule", "schedule: name at least one of "
                                f"{', '.join(SCHEDULE_FIELDS)}")
    return out


def _element_matches(spec: str, value: int) -> bool:
    for element in spec.split(","):
        m = _ELEMENT.match(element.strip())
        assert m is not None  # checked by parse_schedule
        one, a, b = m.groups()
        if (value == int(one)) if one is not None else int(a) <= value <= int(b):
            return True
    return False


_GRAIN = {"second": 0, "minute": 1, "hour": 2, "dayOfMonth": 3, "dayOfWeek": 3, "month": 4}


def schedule_matches(schedule: Mapping[str, str], t: datetime) -> bool:
    """Whether second `t` is one the schedule names. An omitted field finer than the finest
    given one is its lowest value ({"hour": "1", "minute": "5"} fires once, at 01:05:00); an
    omitted coarser one is any value."""
    values = {"second": t.second, "minute": t.minute, "hour": t.hour, "dayOfMonth": t.day,
              "month": t.month, "dayOfWeek": t.isoweekday()}
    finest = min(_GRAIN[n] for n in schedule)
    for name, (lo, _hi) in SCHEDULE_FIELDS.items():
        spec = schedule.get(name)
        if spec is not None:
            if not _element_matches(spec, values[name]):
                return False
        elif _GRAIN[name] < finest and name != "dayOfWeek" and values[name] != lo:
            return False
    return True


class SubscriptionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "hq_subscription_deliveries", "Query subscription documents, by channel (webhook, "
            "websocket) and result (delivered; retried: a webhook attempt failed and will be "
            "retried; dropped: given up after the last retry, or the subscriber's queue was "
            "full).", ["channel", "result"], namespace="rfidd", registry=registry)
        self.inbox_dropped = Counter(
            "hq_subscription_inbox_dropped", "Batches of new eventIDs not pushed to "
            "subscribers because the hub's inbox was full.", namespace="rfidd",
            registry=registry)
        for c in ("webhook", "websocket"):
            for r in ("delivered", "retried", "dropped"):
                self.deliveries.labels(c, r)


def query_document(events: list[dict[str, Any]], name: str, subscription_id: str
                   ) -> Document:
    from rfidd.hq.epcis_api import query_document as base

    doc = base(events, name)
    doc["epcisBody"]["queryResults"]["subscriptionID"] = subscription_id
    return doc


def sign(secret: str, body: bytes) -> str:
    """GS1-Signature value: HMAC-SHA256 of the exact body with the client's signatureToken."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookWorker:
    """One webhook subscription's deliveries, in order, on its own thread: a failure is
    retried with doubling backoff (waiting on the stop event), then dropped and counted."""

    def __init__(self, subscription_id: str, dest: str, secret: str | None, engine: Engine,
                 metrics: SubscriptionMetrics, stop: threading.Event, *, queue_max: int,
                 retry_min_s: float, retry_max_s: float, max_attempts: int,
                 timeout_s: float) -> None:
        self.subscription_id, self.dest, self._secret = subscription_id, dest, secret
        self._engine, self._metrics, self._stop = engine, metrics, stop
        self._queue: queue.Queue[tuple[Document, datetime | None]] = queue.Queue(
            maxsize=queue_max)
        self._position: datetime | None = None  # the saved cursor_at, once one is sent
        self._cancel = threading.Event()
        self._retry = (retry_min_s, retry_max_s, max_attempts)
        self._timeout_s = timeout_s
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"hq-webhook-{subscription_id[:8]}")

    def start(self) -> None:
        self._thread.start()

    def deliver(self, doc: Document, recorded: datetime | None = None) -> None:
        try:
            self._queue.put_nowait((doc, recorded))
        except queue.Full:
            self._metrics.deliveries.labels("webhook", "dropped").inc()
            log.warning("subscription %s: %s is behind by %d documents; one dropped",
                        self.subscription_id, self.dest, self._queue.qsize())

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._cancel.is_set()

    def _run(self) -> None:
        while not self._stopping():
            try:
                doc, recorded = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._send(doc, recorded)

    def _send(self, doc: Document, recorded: datetime | None = None) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        delay, retry_max, attempts = self._retry
        for attempt in range(1, attempts + 1):
            error = self._post(body)
            if error is None:
                self._metrics.deliveries.labels("webhook", "delivered").inc()
                values: dict[str, Any] = {"last_notified_at": datetime.now(UTC)}
                if recorded is not None and (self._position is None
                                             or recorded > self._position):
                    values["cursor_at"] = self._position = recorded  # never backwards
                with self._engine.begin() as conn:
                    conn.execute(update(hq_subscriptions).where(
                        hq_subscriptions.c.subscription_id == self.subscription_id)
                        .values(**values))
                return
            if attempt == attempts:
                break
            self._metrics.deliveries.labels("webhook", "retried").inc()
            log.warning("subscription %s: POST %s failed (%s); retry %d in %.1fs",
                        self.subscription_id, self.dest, error, attempt, delay)
            if self._stop.wait(delay) or self._cancel.is_set():
                return
            delay = min(delay * 2, retry_max)
        self._metrics.deliveries.labels("webhook", "dropped").inc()
        log.error("subscription %s: gave up on a document for %s after %d attempts",
                  self.subscription_id, self.dest, attempts)

    def _post(self, body: bytes) -> str | None:
        req = urllib.request.Request(self.dest, data=body, method="POST", headers={
            "Content-Type": "application/ld+json", "GS1-EPCIS-Version": "2.0.0"})
        if self._secret:
            req.add_header(SIGNATURE_HEADER, sign(self._secret, body))
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s) as r:
                return None if 200 <= r.status < 300 else f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return type(exc).__name__ + (f": {exc}" if str(exc) else "")


@dataclass(eq=False)
class Listener:
    """One subscriber of a named query: a webhook subscription or a WebSocket connection."""

    subscription_id: str
    query_name: str
    channel: str  # webhook | websocket
    deliver: Deliver
    stream: bool = True
    schedule: dict[str, str] | None = None
    report_if_empty: bool = False
    cursor_at: datetime | None = None
    replay: bool = False  # a stream: send what was recorded since cursor_at first
    fired_at: datetime | None = field(default=None, repr=False)
    sent: set[str] | None = field(default=None, repr=False)  # around a replay: no repeat
    sent_until: datetime | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.replay and self.sent is None:
            self.sent = set()

    def unsent(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`events` less those already sent around a replay (then remembered as sent)."""
        if self.sent is None:
            return events
        new = [e for e in events if e.get("eventID") not in self.sent]
        self.sent.update(str(e.get("eventID")) for e in new)
        return new


class SubscriptionHub:
    """The listeners of named queries and the one thread that feeds them."""

    def __init__(self, engine: Engine, registry: CollectorRegistry, *,
                 inbox_max: int = 10_000, reload_s: float = 5.0, tick_s: float = 0.5,
                 settle_s: float = 2.0, queue_max: int = 1000, retry_min_s: float = 1.0,
                 retry_max_s: float = 60.0, max_attempts: int = 8, timeout_s: float = 10.0
                 ) -> None:
        self.engine = engine
        self.metrics = SubscriptionMetrics(registry)
        self._inbox: queue.Queue[tuple[str, ...]] = queue.Queue(maxsize=inbox_max)
        self._reload_s, self._tick_s, self._settle_s = reload_s, tick_s, settle_s
        self._worker_args: dict[str, Any] = dict(
            queue_max=queue_max, retry_min_s=retry_min_s, retry_max_s=retry_max_s,
            max_attempts=max_attempts, timeout_s=timeout_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the two maps below; never held across I/O
        self._webhooks: dict[str, tuple[Listener, WebhookWorker]] = {}
        self._sockets: dict[str, Listener] = {}
        self._reload_now = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- called from other threads

    def offer(self, event_ids: Sequence[str]) -> None:
        """New eventIDs from a committed batch; never blocks (a full inbox is counted)."""
        if not event_ids:
            return
        try:
            self._inbox.put_nowait(tuple(event_ids))
        except queue.Full:
            self.metrics.inbox_dropped.inc()
            log.error("subscription inbox full: %d new events not pushed to subscribers",
                      len(event_ids))

    def changed(self) -> None:
        """The subscriptions table changed in this process: reload it at once."""
        self._reload_now.set()
        self.reload()

    def attach(self, listener: Listener) -> None:
        with self._lock:
            self._sockets[listener.subscription_id] = listener

    def detach(self, subscription_id: str) -> None:
        with self._lock:
            self._sockets.pop(subscription_id, None)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.reload()
        self._thread = threading.Thread(target=self._run, name="hq-subscriptions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            workers = [w for _, w in self._webhooks.values()]
            self._webhooks.clear()
        for w in workers:
            w.join(5)

    def reload(self) -> None:
        """Webhook subscriptions from the database: start new ones' workers, end removed."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(hq_subscriptions)).all()
        wanted = {r.subscription_id: r for r in rows}
        with self._lock:
            gone = [self._webhooks.pop(k) for k in list(self._webhooks) if k not in wanted]
            new = [r for k, r in wanted.items() if k not in self._webhooks]
            for r in new:
                worker = WebhookWorker(r.subscription_id, r.dest, r.secret, self.engine,
                                       self.metrics, self._stop, **self._worker_args)
                listener = Listener(
                    r.subscription_id, r.query_name, "webhook", worker.deliver,
                    stream=bool(r.stream), schedule=dict(r.schedule) if r.schedule else None,
                    report_if_empty=bool(r.report_if_empty),
                    cursor_at=utc(r.cursor_at) or utc(r.created_at),
                    replay=bool(r.stream) and r.cursor_at is not None)
                self._webhooks[r.subscription_id] = (listener, worker)
                worker.start()
        for _, w in gone:
            w.cancel()

    def listeners(self) -> list[Listener]:
        with self._lock:
            return [x for x, _ in self._webhooks.values()] + list(self._sockets.values())

    # ------------------------------------------------------------- the hub's thread

    def _run(self) -> None:
        next_reload = datetime.now(UTC) + timedelta(seconds=self._reload_s)
        while not self._stop.is_set():
            try:
                ids = self._inbox.get(timeout=self._tick_s)
            except queue.Empty:
                ids = ()
            try:
                if ids:
                    self._push(ids)
                self._replays()
                now = datetime.now(UTC)
                self._scheduled(now)
                if now >= next_reload:
                    self.reload()
                    next_reload = now + timedelta(seconds=self._reload_s)
            except Exception:  # the database may be down: log, keep the thread
                log.exception("query subscriptions: pushing failed")

    def _definitions(self, names: set[str]) -> dict[str, eq.EventQuery]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(hq_queries.c.name, hq_queries.c.query)
                                .where(hq_queries.c.name.in_(names))).all()
        out = {}
        for r in rows:
            raw = {k: v if isinstance(v, list) else [v] for k, v in dict(r.query).items()}
            out[r.name] = eq.parse_query(raw, paging=False)
        return out

    def _push(self, ids: tuple[str, ...]) -> None:
        streams = [x for x in self.listeners() if x.stream]
        if not streams:
            return
        queries = self._definitions({x.query_name for x in streams})
        for name, q in queries.items():
            events: list[dict[str, Any]] = []
            recorded: datetime | None = None
            for i in range(0, len(ids), 500):
                got, at = _run_restricted(self.engine, q, ids[i:i + 500])
                events.extend(got)
                recorded = at if recorded is None or (at and at > recorded) else recorded
            if not events:
                continue
            # a batch committing meanwhile may have been received earlier: a margin
            position = None if recorded is None else recorded - timedelta(seconds=self._settle_s)
            for x in streams:
                if x.query_name == name:
                    mine = x.unsent(events)
                    if mine:
                        x.deliver(query_document(mine, name, x.subscription_id), position)

    def _replays(self) -> None:
        """New stream listeners (and those reloaded after a restart): the events recorded
        since their cursor, up to now (they are already attached: what commits later is
        pushed), then live only."""
        now = datetime.now(UTC)
        for x in self.listeners():  # past the settle time nothing replayed is offered again
            if x.sent is not None and x.sent_until is not None and now > x.sent_until:
                x.sent = x.sent_until = None
        due = [x for x in self.listeners() if x.replay]
        if not due:
            return
        queries = self._definitions({x.query_name for x in due})
        for x in due:
            x.replay = False
            q = queries.get(x.query_name)
            if q is not None and x.cursor_at is not None:
                self._window(x, q, x.cursor_at, datetime.now(UTC), positions=True)
            x.sent_until = datetime.now(UTC) + timedelta(seconds=max(self._settle_s, 2.0))

    def _window(self, x: Listener, q: eq.EventQuery, since: datetime, until: datetime, *,
                positions: bool) -> bool:
        """Deliver the query's events recorded in [since, until), page by page; whether a
        document was sent. With `positions`, each page says how far it covers."""
        q = eq.EventQuery(lists=dict(q.lists), per_page=eq.MAX_PER_PAGE,
                          times={**q.times, "GE_recordTime": max(
                              since, q.times.get("GE_recordTime", since)),
                              "LT_recordTime": min(until, q.times.get("LT_recordTime",
                                                                      until))})
        sent = False
        while True:
            events, token = eq.run(self.engine, q)
            after = eq.decode_token(token) if token is not None else None
            if positions:
                events = x.unsent(events)
            if events or (x.report_if_empty and not sent and not positions):
                at = (after[1] if after is not None else until) if positions else None
                x.deliver(query_document(events, x.query_name, x.subscription_id), at)
                sent = True
            if after is None:
                return sent
            q.after_id, q.after_recorded = after

    def _scheduled(self, now: datetime) -> None:
        second = now.replace(microsecond=0)
        due = [x for x in self.listeners() if x.schedule and x.fired_at != second
               and schedule_matches(x.schedule, second)]
        if not due:
            return
        queries = self._definitions({x.query_name for x in due})
        until = second - timedelta(seconds=self._settle_s)  # batches still committing
        for x in due:
            x.fired_at = second
            q = queries.get(x.query_name)
            if q is None:
                continue
            self._window(x, q, x.cursor_at or until, until, positions=False)
            x.cursor_at = until
            if x.channel == "webhook":
                with self.engine.begin() as conn:
                    conn.execute(update(hq_subscriptions).where(
                        hq_subscriptions.c.subscription_id == x.subscription_id)
                        .values(cursor_at=until))


def _run_restricted(engine: Engine, q: eq.EventQuery, ids: Sequence[str]
                    ) -> tuple[list[dict[str, Any]], datetime | None]:
    """The named query's events among `ids`, with GET /events' exact semantics, and the
    latest recordTime among them."""
    q = eq.EventQuery(lists=dict(q.lists), times=dict(q.times), per_page=len(ids))
    stmt = eq.statement(q).where(hq_events.c.event_id.in_(ids))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    times = [t for t in (utc(r.received_at) for r in rows) if t is not None]
    return [dict(r.raw) for r in rows], max(times, default=None)
