"""HQ consumer against the real Mosquitto (MQTT 5) and the real PostgreSQL of the machine.

Every EPCIS document published here is built in the test and validated against the GS1 schema
(tests/data/EPCIS-JSON-Schema.json) before it is sent, so the consumer is tested on what the
sites really publish. Each test uses its own topic prefix, share group and client ids, so tests
do not hear each other on the shared broker.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from inventory.epc import sgtin96_hex
from rfidd.hq import hq_command
from rfidd.hq.config import parse_hq_config
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.documents import parse_document
from rfidd.hq.epcis_api import EpcisServer, build_app
from rfidd.hq.query import history, sites, where
from rfidd.hq.store import (
    Batch,
    BatchResult,
    HqStore,
    SiteMessageRow,
    StatusRow,
    hq_event_epcs,
    hq_events,
    hq_site_messages,
    metadata,
)

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
WS_SGLN = "urn:epc:id:sgln:0614141.00001.0"
ST_SGLN = "urn:epc:id:sgln:0614141.00777.0"


def epc(serial: int) -> str:
    return f"urn:epc:id:sgtin:0614141.107346.{serial}"


# -- EPCIS documents, validated against the schema ----------------------------------------------


@functools.cache
def validator() -> Any:
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def event(
    epcs: list[str], t: datetime, biz_step: str, disposition: str, location: str,
    *, action: str = "OBSERVE", tz: str = "+02:00", tx: list[tuple[str, str]] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])) * (1 if tz[0] == "+" else -1)
    local = t.astimezone(UTC) + offset
    e: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventID": event_id or f"urn:uuid:{uuid.uuid4()}",
        "eventTime": local.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + tz,
        "eventTimeZoneOffset": tz,
        "epcList": epcs,
        "action": action,
        "bizStep": biz_step,
        "disposition": disposition,
        "readPoint": {"id": location.rsplit(".", 1)[0] + ".dock"},
        "bizLocation": {"id": location},
    }
    if tx:
        e["bizTransactionList"] = [{"type": k, "bizTransaction": v} for k, v in tx]
    return e


def document(*events: dict[str, Any], validate: bool = True) -> bytes:
    doc = {
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2024-05-06T08:00:00.000Z",
        "epcisBody": {"eventList": list(events)},
    }
    if validate:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(doc)]
        assert errors == [], errors
    return json.dumps(doc).encode()


def test_documents_built_here_are_checked_by_the_schema() -> None:
    """The validator used above can fail: a document the schema forbids is caught."""
    bad = event([epc(1)], T0, "receiving", "sellable_not_accessible", ST_SGLN)
    bad["action"] = "TELEPORT"
    with pytest.raises(AssertionError, match="TELEPORT"):
        document(bad)


# -- MQTT helpers -------------------------------------------------------------------------------


class Publisher:
    def __init__(self, host: str, port: int) -> None:
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"hq-test-pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda *a: self._ready.set()
        self.client.max_inflight_messages_set(200)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._ready.wait(10), "publisher could not connect"

    def send(self, topic: str, payload: bytes, retain: bool = False, wait: bool = True) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(10)
            assert info.is_published()
        return info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def feed(mqtt5_broker: Any) -> Iterator[dict[str, Any]]:
    """A private topic prefix and share group on the machine's broker, and a publisher."""
    tag = uuid.uuid4().hex[:10]
    pub = Publisher(mqtt5_broker.host, mqtt5_broker.port)
    env = {"prefix": f"t{tag}/rfidd/v1", "group": f"g{tag}", "tag": tag, "pub": pub,
           "broker": mqtt5_broker}
    yield env
    pub.close()


def make_consumer(
    feed: dict[str, Any], store: HqStore, name: str = "a", protocol: str = "5", **kw: Any
) -> HqConsumer:
    b = feed["broker"]
    cfg = parse_hq_config(
        f'[mqtt]\nurl = "mqtt://{b.host}:{b.port}"\nprotocol = "{protocol}"\n'
        f'topic_prefix = "{feed["prefix"]}"\nshare_group = "{feed["group"]}"\n'
        f'client_id = "hq-{feed["tag"]}-{name}"\nsession_expiry_s = 120\n'
    )
    kw.setdefault("batch_max_s", 0.02)
    kw.setdefault("retry_min_s", 0.05)
    return HqConsumer(cfg.mqtt, store, **kw)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def count(store: HqStore, table: Any) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[HqStore]:
    s = HqStore.open(postgres_url)
    yield s
    s.dispose()


@pytest.fixture
def any_store(db_url: str) -> Iterator[HqStore]:
    s = HqStore.open(db_url)
    yield s
    s.dispose()


# -- the store alone, on SQLite and PostgreSQL ----------------------------------------------------


def _on_a_partition(d: Any) -> bool:
    """A month's partition of hq_events (PostgreSQL) and its indexes: not in the metadata."""
    item = d[1] if isinstance(d, tuple) and len(d) > 1 else None
    table = getattr(item, "table", None)
    return table is not None and str(table.name).startswith("hq_events_p")


def test_migration_matches_the_tables_and_reopening_is_harmless(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    s = HqStore.open(db_url)
    s.dispose()
    s = HqStore.open(db_url)  # second upgrade: nothing to do, nothing breaks
    try:
        assert s.current_revision() == "hq0006_hq_index_costs"
        with s.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, metadata)
                    if not (isinstance(d, tuple) and d[0] == "remove_table")
                    and not _on_a_partition(d)]
        assert diff == []
    finally:
        s.dispose()


def test_store_deduplicates_and_orders_by_event_time(any_store: HqStore) -> None:
    item = epc(100)
    shipped = event([item, epc(101)], T0, "shipping", "in_transit", WS_SGLN,
                    tx=[("desadv", "urn:x:desadv:1")])
    received = event([item], T0 + timedelta(hours=5), "receiving", "sellable_not_accessible",
                     ST_SGLN, tz="+01:00", tx=[("desadv", "urn:x:desadv:1")])
    sold = event([item], T0 + timedelta(days=2), "retail_selling", "retail_sold", ST_SGLN)

    def batch(site: str, *evs: dict[str, Any]) -> Batch:
        b = Batch()
        b.events = parse_document(document(*evs), site).events
        b.saw(site, datetime.now(UTC))
        return b

    # The store reports first (its events arrive before the workshop's, delayed by an outage).
    assert any_store.write_batch(batch("st-01", sold, received)) == BatchResult(2, 0, 0, 0)
    assert any_store.write_batch(batch("ws-01", shipped, shipped)) == BatchResult(1, 1, 0, 0)
    assert any_store.write_batch(batch("st-01", received)) == BatchResult(0, 1, 0, 0)
    assert count(any_store, hq_events) == 3
    assert count(any_store, hq_event_epcs) == 4

    h = history(any_store.engine, item)
    assert [(e.site, e.biz_step) for e in h] == [
        ("ws-01", "shipping"), ("st-01", "receiving"), ("st-01", "retail_selling")]
    assert h[1].event_time == T0 + timedelta(hours=5)
    assert h[0].biz_transactions == [{"type": "desadv", "bizTransaction": "urn:x:desadv:1"}]
    now = where(any_store.engine, item)
    assert now is not None
    assert (now.site, now.disposition, now.biz_location) == ("st-01", "retail_sold", ST_SGLN)
    other = where(any_store.engine, epc(101))
    assert other is not None and other.site == "ws-01" and other.biz_step == "shipping"
    assert where(any_store.engine, epc(999)) is None and history(any_store.engine, epc(999)) == []

    t = datetime(2024, 5, 6, 12, tzinfo=UTC)
    b = Batch(statuses=[StatusRow("st-01", "online", t, False),
                        StatusRow("st-01", "offline", t + timedelta(seconds=1), False)],
              site_messages=[SiteMessageRow("st-01", "alert", {"kind": "exit", "epc": item}, t)]
              * 2)
    b.saw("st-01", t)
    assert any_store.write_batch(b) == BatchResult(0, 0, 1, 1)
    older = Batch()
    older.saw("st-01", t - timedelta(hours=1))  # an older delivery must not move last_seen back
    any_store.write_batch(older)
    states = {s.site: s for s in sites(any_store.engine)}
    assert set(states) == {"st-01", "ws-01"}
    assert states["st-01"].status == "offline"
    assert states["st-01"].last_seen is not None and states["st-01"].last_seen >= t
    assert states["ws-01"].status is None
    assert count(any_store, hq_site_messages) == 1


# -- the consumer on the real broker -------------------------------------------------------------


def test_two_sites_with_duplicates_and_malformed_input(
    feed: dict[str, Any], pg_store: HqStore, postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rfidd.hq")
    prefix, pub = feed["prefix"], feed["pub"]
    ws, st = f"{prefix}/ws-01/epcis", f"{prefix}/st-01/epcis"
    a, b = epc(1), epc(2)
    commissioned = event([a, b], T0, "commissioning", "active", WS_SGLN, action="ADD")
    shipped = event([a, b], T0 + timedelta(hours=1), "shipping", "in_transit", WS_SGLN,
                    tx=[("desadv", "urn:x:desadv:7")])
    received = event([a, b], T0 + timedelta(days=1), "receiving", "sellable_not_accessible",
                     ST_SGLN, tx=[("desadv", "urn:x:desadv:7")])
    stocked = event([a], T0 + timedelta(days=1, hours=1), "stocking", "sellable_accessible",
                    ST_SGLN)
    sold = event([a], T0 + timedelta(days=3), "retail_selling", "retail_sold", ST_SGLN,
                 tx=[("po", "urn:x:pos:991")])
    broken = event([b], T0 + timedelta(days=4), "stocking", "sellable_accessible", ST_SGLN)
    del broken["eventID"]
    # A retained status published before HQ starts reaches HQ on its plain subscription.
    pub.send(f"{prefix}/ws-01/status", b"online", retain=True)

    consumer = make_consumer(feed, pg_store)
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        # The store's events first: arrival order is not business order.
        sent = [
            (st, document(received, stocked)),
            (st, document(sold)),
            (st, document(received)),  # redelivered document
            (ws, document(commissioned, shipped)),
            (ws, document(shipped, commissioned)),  # duplicate events, other order
            (st, b"{this is not json"),
            (st, document(broken, sold)),  # one bad event, one duplicate
            (f"{prefix}/st-01/alerts", json.dumps({"alert": "exit", "epc": b}).encode()),
            (f"{prefix}/st-01/alerts", json.dumps({"alert": "exit", "epc": b}).encode()),
            (f"{prefix}/st-01/reports/count", json.dumps({"found": 2, "expected": 2}).encode()),
            (f"{prefix}/st-01/alerts", b"[1, 2"),
            (f"{prefix}/st-01/status", b"online"),
            (f"{prefix}/st-01/status", b"maybe"),
        ]
        for topic, payload in sent:
            pub.send(topic, payload)
        wait_until("every message processed",
                   lambda: consumer.snapshot().messages >= len(sent) + 1)
        s = consumer.snapshot()
        assert s.messages == len(sent) + 1  # + the retained status
        assert s.events_stored == 5
        assert s.events_duplicate == 4  # received once, shipped+commissioned, sold once
        assert s.events_malformed == 1
        assert s.messages_malformed == 3  # not JSON, bad alert, bad status
        assert s.acked == len(sent) + 1 and s.ack_skipped == 0
        assert s.site_messages_stored == 2
    finally:
        consumer.stop()
        pub.send(f"{prefix}/ws-01/status", b"", retain=True)  # clear the retained message

    assert count(pg_store, hq_events) == 5
    assert count(pg_store, hq_site_messages) == 2
    texts = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipped malformed message on " + st in texts and "not JSON" in texts
    assert "eventID missing" in texts
    assert "status 'maybe'" in texts

    steps = [(e.site, e.biz_step) for e in history(pg_store.engine, a)]
    assert steps == [("ws-01", "commissioning"), ("ws-01", "shipping"), ("st-01", "receiving"),
                     ("st-01", "stocking"), ("st-01", "retail_selling")]
    now_a, now_b = where(pg_store.engine, a), where(pg_store.engine, b)
    assert now_a is not None and now_b is not None
    assert (now_a.site, now_a.disposition, now_a.biz_step) == ("st-01", "retail_sold",
                                                               "retail_selling")
    assert (now_b.site, now_b.biz_location, now_b.disposition) == (
        "st-01", ST_SGLN, "sellable_not_accessible")
    states = {x.site: x.status for x in sites(pg_store.engine)}
    assert states == {"ws-01": "online", "st-01": "online"}

    # -- the same answers from the CLI ...
    runner = CliRunner()
    hex_a = sgtin96_hex("10614141073467", 1, 7)
    r = runner.invoke(hq_command, ["where", hex_a, "--database-url", postgres_url, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["epc"] == a and out["site"] == "st-01" and out["disposition"] == "retail_sold"
    r = runner.invoke(hq_command, ["history", a, "--database-url", postgres_url, "--json"])
    assert [e["biz_step"] for e in json.loads(r.output)["events"]] == [
        "commissioning", "shipping", "receiving", "stocking", "retail_selling"]
    r = runner.invoke(hq_command, ["history", a, "--database-url", postgres_url])
    assert r.exit_code == 0 and "5 events" in r.output and "ws-01" in r.output
    r = runner.invoke(hq_command, ["where", epc(404), "--database-url", postgres_url])
    assert r.exit_code == 1 and "no event at HQ" in r.output
    r = runner.invoke(hq_command, ["where", "nonsense", "--database-url", postgres_url])
    assert r.exit_code == 2 and "neither an EPC URI" in r.output
    r = runner.invoke(hq_command, ["sites", "--database-url", postgres_url, "--json"])
    assert {x["site"] for x in json.loads(r.output)["sites"]} == {"ws-01", "st-01"}

    # -- ... and from HTTP.
    api = EpcisServer(build_app(pg_store, CollectorRegistry()))
    api.start()
    from rfidd.hq import tokens
    token = tokens.create(pg_store.engine, "ops", "read", T0)
    try:
        def get(path: str, auth: bool = True) -> tuple[int, Any]:
            req = urllib.request.Request(f"http://127.0.0.1:{api.port}{path}")
            if auth:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        code, body = get(f"/api/v1/items/{urllib.parse.quote(a, safe='')}")
        assert code == 200 and body["site"] == "st-01" and body["biz_step"] == "retail_selling"
        code, body = get(f"/api/v1/items/{hex_a}/history")
        assert code == 200 and [e["site"] for e in body["events"]] == ["ws-01"] * 2 + ["st-01"] * 3
        code, body = get(f"/api/v1/items/{epc(404)}")
        assert code == 404 and epc(404) in body["error"]
        code, body = get("/api/v1/items/garbage!/history")
        assert code == 400
        code, body = get("/api/v1/sites")
        assert code == 200 and len(body["sites"]) == 2
        assert get("/api/v1/sites", auth=False)[0] == 401  # the same tokens as /events
    finally:
        api.stop()


def test_two_consumers_in_one_group_store_everything_once(
    feed: dict[str, Any], pg_store: HqStore
) -> None:
    c1 = make_consumer(feed, pg_store, "one")
    c2 = make_consumer(feed, pg_store, "two")
    c1.start()
    c2.start()
    try:
        assert c1.wait_subscribed(10) and c2.wait_subscribed(10)
        docs = []
        for i in range(40):
            site = ("ws-01", "st-01")[i % 2]
            evs = [event([epc(1000 + i * 5 + j)], T0 + timedelta(minutes=i), "stocking",
                         "sellable_accessible", ST_SGLN) for j in range(5)]
            docs.append((f"{feed['prefix']}/{site}/epcis", document(*evs)))
        docs += docs[:10]  # at-least-once: ten documents arrive twice
        infos = [feed["pub"].send(t, p, wait=False) for t, p in docs]
        for info in infos:
            info.wait_for_publish(10)

        def total() -> int:
            return c1.snapshot().messages + c2.snapshot().messages

        wait_until("both consumers processed everything", lambda: total() >= len(docs))
        s1, s2 = c1.snapshot(), c2.snapshot()
        assert total() == len(docs)  # each message went to one member of the group only
        assert s1.messages > 0 and s2.messages > 0, (s1, s2)
        assert s1.events_stored + s2.events_stored == 200
        assert s1.events_duplicate + s2.events_duplicate == 50
    finally:
        c1.stop()
        c2.stop()
    assert count(pg_store, hq_events) == 200
    assert count(pg_store, hq_event_epcs) == 200


def test_events_published_while_stopped_arrive_after_restart(
    feed: dict[str, Any], pg_store: HqStore
) -> None:
    first = make_consumer(feed, pg_store, "p")
    first.start()
    assert first.wait_subscribed(10)
    first.stop()
    for i in range(10):
        feed["pub"].send(f"{feed['prefix']}/st-01/epcis", document(
            event([epc(2000 + i)], T0 + timedelta(minutes=i), "receiving",
                  "sellable_not_accessible", ST_SGLN)))
    assert count(pg_store, hq_events) == 0
    again = make_consumer(feed, pg_store, "p")  # same client id: same broker session
    again.start()
    try:
        wait_until("the queued events", lambda: count(pg_store, hq_events) == 10)
        # The writer counts after its commit: the rows can be visible a moment before.
        wait_until("the writer's count", lambda: again.snapshot().events_stored == 10)
    finally:
        again.stop()


class BrokenStore(HqStore):
    """A database that fails every commit (down, disk full...)."""

    def __init__(self, real: HqStore) -> None:
        super().__init__(real.engine)
        self.attempts = 0

    def write_batch(self, batch: Batch) -> BatchResult:
        self.attempts += 1
        raise RuntimeError("database is down")


def test_nothing_is_acknowledged_before_commit(
    feed: dict[str, Any], pg_store: HqStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer that cannot commit leaves its messages unacknowledged; the broker hands them
    to the next consumer with the session, which stores them."""
    broken = BrokenStore(pg_store)
    down = make_consumer(feed, broken, "c", retry_min_s=0.01, retry_max_s=0.05)
    down.start()
    assert down.wait_subscribed(10)
    for i in range(5):
        feed["pub"].send(f"{feed['prefix']}/st-01/epcis", document(
            event([epc(3000 + i)], T0, "receiving", "sellable_not_accessible", ST_SGLN)))
    wait_until("commit attempts", lambda: broken.attempts >= 3)
    down.stop(timeout=0.2)  # gives up on the batch: it stays unacknowledged
    s = down.snapshot()
    assert s.acked == 0 and s.db_errors >= 3
    assert "database is down" in caplog.text
    assert count(pg_store, hq_events) == 0

    up = make_consumer(feed, pg_store, "c")
    up.start()
    try:
        wait_until("redelivery", lambda: count(pg_store, hq_events) == 5)
        wait_until("acks", lambda: up.snapshot().acked == 5)
    finally:
        up.stop()


def test_mqtt_311_falls_back_to_a_plain_subscription(
    feed: dict[str, Any], pg_store: HqStore, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = make_consumer(feed, pg_store, "v3", protocol="3.1.1")
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        assert "no shared subscriptions" in caplog.text
        feed["pub"].send(f"{feed['prefix']}/ws-01/epcis", document(
            event([epc(4000)], T0, "commissioning", "active", WS_SGLN, action="ADD")))
        wait_until("the event", lambda: count(pg_store, hq_events) == 1)
    finally:
        consumer.stop()


def test_throughput_into_postgresql(feed: dict[str, Any], pg_store: HqStore) -> None:
    """Measured, not asserted: events/s from first publish to last commit (printed)."""
    n_docs, per_doc = 50, 200
    # Same shape for every document: the schema check of the first vouches for the rest.
    payloads = [
        document(*[event([epc(10_000 + d * per_doc + j)], T0 + timedelta(seconds=j),
                         "cycle_counting", "sellable_accessible", ST_SGLN)
                   for j in range(per_doc)], validate=d == 0)
        for d in range(n_docs)
    ]
    consumer = make_consumer(feed, pg_store, "perf", batch_max_s=0.05)
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        t0 = time.perf_counter()
        infos = [feed["pub"].send(f"{feed['prefix']}/st-01/epcis", p, wait=False)
                 for p in payloads]
        wait_until("all events stored",
                   lambda: consumer.snapshot().events_stored == n_docs * per_doc, timeout=60)
        elapsed = time.perf_counter() - t0
        for info in infos:
            assert info.is_published()
    finally:
        consumer.stop()
    assert count(pg_store, hq_events) == n_docs * per_doc
    print(f"\nHQ consumer: {n_docs * per_doc} events ({n_docs} documents) stored into "
          f"PostgreSQL in {elapsed:.2f}s = {n_docs * per_doc / elapsed:.0f} events/s")


def test_run_command_serves_http_and_stops_on_sigterm(
    feed: dict[str, Any], tmp_path: Path, postgres_url: str
) -> None:
    """`rfidd hq run -c FILE` as an operator starts it: a process, a config file, SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    b = feed["broker"]
    conf = tmp_path / "hq.toml"
    conf.write_text(
        f'[database]\nurl = "{postgres_url}"\nbatch_max_ms = 10\n'
        f'[mqtt]\nurl = "mqtt://{b.host}:{b.port}"\ntopic_prefix = "{feed["prefix"]}"\n'
        f'share_group = "{feed["group"]}"\nclient_id = "hq-{feed["tag"]}-run"\n'
        f"session_expiry_s = 60\n[epcis]\nport = {port}\n"
    )
    made = CliRunner().invoke(hq_command, ["token", "add", "ops", "--scope", "read",
                                           "-c", str(conf)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    # HQ stores only registered sites: the operator registers the store first.
    added = CliRunner().invoke(hq_command, ["site", "add", "st-01", "--name", "Paris Opera",
                                            "-c", str(conf)])
    assert added.exit_code == 0 and "registered" in added.output, added.output
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from rfidd.hq import hq_command; hq_command()",
         "run", "-c", str(conf)],
        cwd=root, stderr=subprocess.PIPE, text=True,
    )
    try:
        def get(path: str) -> Any:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
            return urllib.request.urlopen(req, timeout=2)

        def api(path: str) -> Any:
            with get(path) as r:
                return json.loads(r.read())

        def up() -> bool:
            try:
                return bool(api("/api/v1/status")["mqtt_connected"])
            except OSError:
                return False

        # The web interface comes up last, after FastAPI's imports: slow on a loaded machine.
        wait_until("the API and the broker connection", up, timeout=90)
        item = epc(5000)
        feed["pub"].send(f"{feed['prefix']}/st-01/epcis", document(
            event([item], T0, "receiving", "sellable_not_accessible", ST_SGLN)))

        def found() -> bool:
            try:
                return bool(api(f"/api/v1/items/{item}")["site"] == "st-01")
            except urllib.error.HTTPError:
                return False

        wait_until("the item over HTTP", found)
        with get("/metrics") as r:
            assert b"rfidd_hq_events_stored_total 1.0" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "received SIGTERM" in err


def test_a_message_postgresql_refuses_is_skipped_not_retried_forever(
    feed: dict[str, Any], pg_store: HqStore, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses NUL in text/jsonb: that one message is skipped, its batch mates kept."""
    good = [event([epc(6000 + i)], T0, "receiving", "sellable_not_accessible", ST_SGLN)
            for i in range(3)]
    poison = event([epc(6100)], T0, "receiving", "sellable_not_accessible", ST_SGLN)
    poison["bizStep"] = "receiv\x00ing"
    consumer = make_consumer(feed, pg_store, "nul", batch_max_s=0.3)
    consumer.start()
    try:
        assert consumer.wait_subscribed(10)
        topic = f"{feed['prefix']}/st-01/epcis"
        feed["pub"].send(topic, document(good[0]))
        feed["pub"].send(topic, json.dumps({"type": "EPCISDocument", "epcisBody": {
            "eventList": [poison]}}).encode())
        feed["pub"].send(topic, document(good[1], good[2]))
        wait_until("all three messages", lambda: consumer.snapshot().acked == 3)
        s = consumer.snapshot()
        assert s.events_stored == 3 and s.messages_malformed == 1, s
    finally:
        consumer.stop()
    assert count(pg_store, hq_events) == 3
    assert "the database refuses" in caplog.text
