"""HqLink against real brokers: ordered draining, PUBACK-gated marking, outages, last will,
reader status, commands, MQTT 3.1.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from inventory.events import stable_event_id
from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.mqtt import HqLink
from rfidd.store import Database, EventRecord, Message, apply_batch, open_database, outbox_stats

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def builder(events: list[dict[str, Any]], created: datetime, sender: str) -> dict[str, Any]:
    """Stand-in for inventory.epcis.epcis_document: the link must pass events through as-is."""
    return {
        "type": "EPCISDocument",
        "creationDate": created.isoformat(),
        "sender": sender,
        "epcisBody": {"eventList": events},
    }


def ev(n: int, tag: str = "") -> EventRecord:
    eid = stable_event_id("mqtt-test", tag, n)
    return EventRecord(eid, 1000.0 + n, {"eventID": eid, "n": n, "type": "ObjectEvent"})


def commit(
    db: Database, events: Sequence[EventRecord] = (), messages: Sequence[Message] = ()
) -> None:
    with db.write() as s:
        apply_batch(s, events=events, messages=messages)


def depth(db: Database) -> int:
    with db.session() as s:
        return outbox_stats(s)[0]


def event_ids(msgs: list[Any]) -> list[str]:
    """eventIDs in arrival order across the EPCIS documents received."""
    out: list[str] = []
    for m in msgs:
        doc = json.loads(m.payload)
        out.extend(e["eventID"] for e in doc["epcisBody"]["eventList"])
    return out


def first_occurrences(ids: list[str]) -> list[str]:
    """What an HQ consumer deduplicating on eventID keeps."""
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    """SQLite here; test_drains_from_postgresql runs the publisher on PostgreSQL."""
    d = open_database(sqlite_url)
    yield d
    d.dispose()


class LinkFactory:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.links: list[HqLink] = []
        self.stop = threading.Event()

    def __call__(
        self, broker: Any, *, protocol: str = "5", per_doc: int = 200, site: str | None = None,
        handler: Callable[[str, bytes], None] | None = None, **kw: Any,
    ) -> HqLink:
        site = site or f"t{uuid.uuid4().hex[:10]}"
        cfg = MqttConfig.model_validate({
            "url": f"mqtt://{broker.host}:{broker.port}", "protocol": protocol,
            "client_id": f"rfidd-test-{uuid.uuid4().hex[:8]}",
            "max_events_per_document": per_doc, "keepalive_s": 5,
        })
        params: dict[str, Any] = {
            "poll_interval_s": 0.05, "stats_interval_s": 0.0, "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5, "session_expiry_s": 60,
            # 3.1.1 sessions never expire: don't leave one per test on the shared broker.
            "persistent_session": protocol == "5",
        }
        params.update(kw)
        link = HqLink(cfg, site, self.db, Metrics(), self.stop, document_builder=builder,
                      command_handler=handler, sender="urn:epc:id:sgln:0614141.00777.0", **params)
        self.links.append(link)
        return link


@pytest.fixture
def make_link(db: Database) -> Iterator[LinkFactory]:
    f = LinkFactory(db)
    yield f
    f.stop.set()
    for link in f.links:
        link.stop(timeout=2)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_outbox_drains_in_order_grouping_epcis(
    protocol: str, mqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    if protocol == "5" and not mqtt_broker.supports_v5:
        pytest.skip("broker without MQTT 5")
    link = make_link(mqtt_broker, protocol=protocol, per_doc=2)
    col = mqtt_collector(mqtt_broker, f"{link.base}/#", protocol=protocol)
    e = [ev(i) for i in range(5)]
    commit(db, e[:3], [])
    commit(db, [], [Message("alert", "alerts", {"kind": "exit"})])
    commit(db, e[3:], [])
    link.start()
    feed = (link.epcis_topic, f"{link.base}/alerts")
    got = col.wait_for(lambda ms: len([m for m in ms if m.topic in feed]) >= 4)
    data = [m for m in got if m.topic in feed]
    assert [m.topic.rsplit("/", 1)[1] for m in data] == ["epcis", "epcis", "alerts", "epcis"]
    docs = [json.loads(m.payload) for m in data]
    assert [[x["n"] for x in d["epcisBody"]["eventList"]] for d in (docs[0], docs[1], docs[3])] \
        == [[0, 1], [2], [3, 4]]
    assert docs[0]["sender"] == "urn:epc:id:sgln:0614141.00777.0"
    assert docs[2] == {"kind": "exit"}
    assert all(m.qos == 1 for m in data)
    wait_until(lambda: depth(db) == 0, what="rows marked sent")
    # Counters follow the commit of mark_sent.
    wait_until(lambda: link.stats.acked_rows == 6, what="ack counters")
    assert link.stats.published_messages == 4
    reg = link.metrics.registry
    wait_until(lambda: reg.get_sample_value("rfidd_outbox_depth") == 0, what="depth metric")
    assert reg.get_sample_value("rfidd_mqtt_connected") == 1
    assert reg.get_sample_value("rfidd_mqtt_published_messages_total", {"stream": "epcis"}) == 3
    # online is retained on the status topic
    status = [m for m in got if m.topic == link.status_topic]
    assert status and status[-1].payload == b"online"
    # The retained sequence head (also under base/#) follows the rows it was issued with.
    got = col.wait_for(lambda ms: any(m.topic == link.head_topic for m in ms))
    topics = [m.topic for m in got]
    assert topics.index(link.head_topic) > max(i for i, t in enumerate(topics) if t in feed)


def test_notify_publishes_rows_committed_later(
    mqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    # A long poll interval: only notify() can make this prompt.
    link = make_link(mqtt_broker, protocol="5" if mqtt_broker.supports_v5 else "3.1.1",
                     poll_interval_s=30.0, stats_interval_s=30.0)
    col = mqtt_collector(mqtt_broker, link.epcis_topic)
    link.start()
    assert link.wait_connected(10)
    for batch in range(3):
        commit(db, [ev(i, f"b{batch}") for i in range(4)])
        link.notify()
        col.wait_count(batch + 1)
    assert len(event_ids(col.messages)) == 12


def test_rows_marked_sent_only_after_puback_and_resent_after_drop(
    private_mosquitto: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    broker = private_mosquitto.broker
    link = make_link(broker, max_inflight=50)
    col = mqtt_collector(broker, link.epcis_topic)
    link.start()
    assert link.wait_connected(10)
    commit(db, [ev(0, "pre")])
    link.notify()
    wait_until(lambda: depth(db) == 0, what="first row acknowledged")

    private_mosquitto.pause()  # no PUBACK can come back now
    events = [ev(i, "frozen") for i in range(10)]
    for e in events:
        commit(db, [e])
        link.notify()
    wait_until(lambda: link.inflight_rows == 10, what="rows handed to the client")
    time.sleep(0.2)
    assert depth(db) == 10, "rows must stay pending until the broker acknowledges them"
    # Drop the connection under the link's feet (network cut), then let the broker run again.
    sock = link._client.socket() if link._client else None
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    private_mosquitto.resume()
    wait_until(lambda: depth(db) == 0, timeout=20, what="rows resent and acknowledged")
    want = [e.event_id for e in [ev(0, "pre"), *events]]
    col.wait_for(lambda ms: set(want) <= set(event_ids(ms)), timeout=10)
    assert first_occurrences(event_ids(col.messages)) == want


def test_broker_outage_delivers_every_row_once_in_order(
    private_mosquitto: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    broker = private_mosquitto.broker
    link = make_link(broker, per_doc=7)
    col = mqtt_collector(broker, link.epcis_topic, persistent=True)
    link.start()
    assert link.wait_connected(10)
    before = [ev(i, "before") for i in range(20)]
    commit(db, before)
    link.notify()
    wait_until(lambda: depth(db) == 0, what="rows before the outage")

    private_mosquitto.stop()
    wait_until(lambda: not link.connected, what="link notices the outage")
    during = [ev(i, "during") for i in range(30)]
    for i in range(0, 30, 10):
        commit(db, during[i : i + 10])
        link.notify()
    time.sleep(0.3)
    assert depth(db) == 30
    assert link.metrics.registry.get_sample_value("rfidd_mqtt_connected") == 0
    private_mosquitto.start()
    wait_until(lambda: depth(db) == 0, timeout=20, what="backlog drained after the outage")
    want = [e.event_id for e in before + during]
    col.wait_for(lambda ms: set(want) <= set(event_ids(ms)), timeout=15)
    ids = event_ids(col.messages)
    assert first_occurrences(ids) == want
    assert link.stats.disconnects >= 1 and link.stats.connects >= 2


def test_last_will_offline_when_process_dies(
    mqtt5_broker: Any, tmp_path: Path, mqtt_collector: Any
) -> None:
    site = f"t{uuid.uuid4().hex[:10]}"
    script = textwrap.dedent(f"""
        import sys, threading, time
        from rfidd.config import MqttConfig
        from rfidd.metrics import Metrics
        from rfidd.mqtt import HqLink
        from rfidd.store import open_database
        db = open_database({f"sqlite:///{tmp_path / 'child.db'}"!r})
        cfg = MqttConfig(url="mqtt://{mqtt5_broker.host}:{mqtt5_broker.port}",
                         client_id="rfidd-will-{site}", keepalive_s=5)
        link = HqLink(cfg, {site!r}, db, Metrics(), threading.Event(),
                      document_builder=lambda e, c, s: {{}}, session_expiry_s=0)
        link.start()
        assert link.wait_connected(10)
        link.set_reader_status("r1", True)
        print("connected", flush=True)
        time.sleep(60)
    """)
    col = mqtt_collector(mqtt5_broker, f"rfidd/v1/{site}/#")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                             cwd=tmp_path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"connected"
        status = f"rfidd/v1/{site}/status"
        reader = f"rfidd/v1/{site}/readers/r1/status"
        col.wait_for(lambda ms: {(m.topic, m.payload) for m in ms} >= {
            (status, b"online"), (reader, b"online")})
        child.kill()  # no DISCONNECT: the broker must publish the will
        child.wait(5)
        col.wait_for(lambda ms: ms[-1].topic == status and ms[-1].payload == b"offline")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    # Retained: a late subscriber learns the site is offline and reader r1 was online.
    late = mqtt_collector(mqtt5_broker, f"rfidd/v1/{site}/#")
    got = late.wait_count(2)
    by_topic = {m.topic: m for m in got}
    assert by_topic[status].payload == b"offline" and by_topic[status].retain
    assert by_topic[f"rfidd/v1/{site}/readers/r1/status"].payload == b"online"
    _clear_retained(mqtt5_broker, [status, f"rfidd/v1/{site}/readers/r1/status"])


def _clear_retained(broker: Any, topics: list[str]) -> None:
    import paho.mqtt.publish as publish

    publish.multiple([{"topic": t, "payload": b"", "qos": 1, "retain": True} for t in topics],
                     hostname=broker.host, port=broker.port)


def test_clean_stop_publishes_offline_and_reader_status_survives_reconnect(
    private_mosquitto: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    broker = private_mosquitto.broker
    link = make_link(broker)
    link.set_reader_status("dock", False)  # before connecting: remembered
    link.start()
    assert link.wait_connected(10)
    link.set_reader_status("floor1", True)
    col = mqtt_collector(broker, f"{link.base}/#")
    col.wait_for(lambda ms: {m.topic for m in ms} >= {
        link.status_topic, f"{link.base}/readers/dock/status", f"{link.base}/readers/floor1/status"
    })
    # A broker restart without our retained messages: the link republishes on reconnect.
    private_mosquitto.stop()
    for f in Path(private_mosquitto.workdir).glob("mosquitto-*-data/*"):
        f.unlink()
    private_mosquitto.start()
    late = mqtt_collector(broker, f"{link.base}/readers/#")
    got = late.wait_count(2, timeout=15)
    assert {(m.topic.split("/")[-2], m.payload) for m in got} == {
        ("dock", b"offline"), ("floor1", b"online")
    }
    wait_until(lambda: link.connected, what="reconnected")
    watch = mqtt_collector(broker, link.status_topic)
    watch.wait_for(lambda ms: bool(ms) and ms[-1].payload == b"online")
    link.stop()
    watch.wait_for(lambda ms: ms[-1].payload == b"offline")
    assert link.metrics.registry.get_sample_value("rfidd_mqtt_connected") == 0


def test_commands_handled_and_hostile_ones_answered(
    mqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    received: list[tuple[str, bytes]] = []

    def handler(name: str, payload: bytes) -> None:
        if name == "boom":
            raise ValueError("line 3: bad ASN")
        received.append((name, payload))

    proto = "5" if mqtt_broker.supports_v5 else "3.1.1"
    link = make_link(mqtt_broker, protocol=proto, handler=handler, max_command_bytes=256 * 1024)
    errors = mqtt_collector(mqtt_broker, link.errors_topic, protocol=proto)
    link.start()
    assert link.wait_connected(10)
    import paho.mqtt.publish as publish

    def send(name: str, payload: bytes) -> None:
        publish.single(f"{link.base}/cmd/{name}", payload, qos=1, hostname=mqtt_broker.host,
                       port=mqtt_broker.port)

    # Subscriptions are asynchronous: retry the first command until it lands.
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        send("asn", b'{"id": 1}')
        time.sleep(0.1)
    assert received[0] == ("asn", b'{"id": 1}')
    send("catalog", b"x" * (300 * 1024))
    send("boom", b"{}")
    got = errors.wait_count(2)
    replies = {json.loads(m.payload)["command"]: json.loads(m.payload) for m in got}
    assert "exceeds" in replies["catalog"]["error"] and "262144" in replies["catalog"]["error"]
    assert replies["boom"]["error"] == "line 3: bad ASN"
    assert replies["boom"]["site"] == link.site_id
    # The link still works: commands and publishing.
    n = len(received)
    send("sale", b"ok")
    wait_until(lambda: len(received) > n, what="command after the hostile ones")
    col = mqtt_collector(mqtt_broker, link.epcis_topic, protocol=proto)
    commit(db, [ev(1, "after")])
    link.notify()
    col.wait_count(1)
    reg = link.metrics.registry
    assert reg.get_sample_value("rfidd_commands_total",
                                {"command": "catalog", "result": "rejected"}) == 1
    assert reg.get_sample_value("rfidd_commands_total",
                                {"command": "boom", "result": "error"}) == 1
    wait_until(lambda: link.stats.commands_ok >= 2, what="ok counter")


def test_bad_outbox_row_is_set_aside_and_the_feed_goes_on(
    mqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    def picky(events: list[dict[str, Any]], created: datetime, sender: str) -> dict[str, Any]:
        if any(e.get("n") == 2 for e in events):
            raise ValueError("event 2 has no bizStep")
        return builder(events, created, sender)

    proto = "5" if mqtt_broker.supports_v5 else "3.1.1"
    link = make_link(mqtt_broker, protocol=proto)
    link.document_builder = picky
    col = mqtt_collector(mqtt_broker, link.epcis_topic, protocol=proto)
    from sqlalchemy import insert, select

    from rfidd.store.models import OutboxMessage

    commit(db, [ev(i, "picky") for i in range(5)])
    with db.write() as s:  # a corrupt row, as a hand edit or a bug could leave
        s.execute(insert(OutboxMessage).values(stream="epcis", topic="epcis", payload="{broken",
                                               created_at=time.time()))
    commit(db, [ev(5, "picky")])
    link.start()
    want = [ev(i, "picky").event_id for i in (0, 1, 3, 4, 5)]
    col.wait_for(lambda ms: event_ids(ms) == want)
    wait_until(lambda: depth(db) == 0, what="good rows sent, bad rows set aside")
    assert link.stats.failed_rows == 2
    with db.session() as s:
        errors = sorted(r.error or "" for r in s.scalars(
            select(OutboxMessage).where(OutboxMessage.failed_at.is_not(None))))
    assert len(errors) == 2
    assert any("event 2 has no bizStep" in e for e in errors)
    assert any("bad event JSON" in e for e in errors)


def test_mqtt311_against_amqtt(
    amqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    received: list[str] = []
    link = make_link(amqtt_broker, protocol="3.1.1", per_doc=3,
                     handler=lambda name, payload: received.append(name))
    col = mqtt_collector(amqtt_broker, f"{link.base}/#", protocol="3.1.1")
    commit(db, [ev(i, "amqtt") for i in range(7)])
    link.start()
    assert link.wait_connected(10)
    want = [ev(i, "amqtt").event_id for i in range(7)]
    col.wait_for(lambda ms: first_occurrences(event_ids(
        [m for m in ms if m.topic == link.epcis_topic])) == want)
    wait_until(lambda: depth(db) == 0, what="rows acknowledged by amqtt")
    import paho.mqtt.publish as publish

    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        publish.single(f"{link.base}/cmd/transfer", b"{}", qos=1, hostname=amqtt_broker.host,
                       port=amqtt_broker.port, protocol=mqtt.MQTTv311)
        time.sleep(0.2)
    assert received and received[0] == "transfer"


def test_password_file_is_read_and_missing_file_named(tmp_path: Path, db: Database) -> None:
    from rfidd.mqtt import HqLinkError

    cfg = MqttConfig.model_validate({"username": "site", "password_file": tmp_path / "nope"})
    link = HqLink(cfg, "s1", db, Metrics(), threading.Event(), document_builder=builder)
    with pytest.raises(HqLinkError, match=r"password_file .*nope"):
        link.start()


def test_drains_from_postgresql(
    postgres_url: str, mqtt_broker: Any, mqtt_collector: Any
) -> None:
    pg = open_database(postgres_url)
    factory = LinkFactory(pg)
    try:
        proto = "5" if mqtt_broker.supports_v5 else "3.1.1"
        link = factory(mqtt_broker, protocol=proto, per_doc=4)
        col = mqtt_collector(mqtt_broker, link.epcis_topic, protocol=proto)
        events = [ev(i, "pg") for i in range(10)]
        commit(pg, events[:6])
        link.start()
        assert link.wait_connected(10)
        commit(pg, events[6:])
        link.notify()
        col.wait_for(lambda ms: len(event_ids(ms)) >= 10)
        assert first_occurrences(event_ids(col.messages)) == [e.event_id for e in events]
        wait_until(lambda: depth(pg) == 0, what="rows marked sent on PostgreSQL")
    finally:
        factory.stop.set()
        for link in factory.links:
            link.stop(timeout=2)
        pg.dispose()


def test_a_command_not_yet_handled_at_stop_is_redelivered(
    mqtt5_broker: Any, db: Database
) -> None:
    """Commands are acknowledged once handled: one still queued when the daemon stops comes
    back on the persistent session (handlers are idempotent, so a repeat is harmless)."""
    import paho.mqtt.publish as publish

    site, client_id = f"t{uuid.uuid4().hex[:10]}", f"rfidd-test-{uuid.uuid4().hex[:8]}"
    cfg = MqttConfig.model_validate({
        "url": f"mqtt://{mqtt5_broker.host}:{mqtt5_broker.port}", "client_id": client_id,
        "keepalive_s": 5})
    entered, release = threading.Event(), threading.Event()
    got: list[bytes] = []

    def stuck(name: str, payload: bytes) -> None:
        entered.set()
        release.wait(10)

    def link(handler: Callable[[str, bytes], None]) -> HqLink:
        return HqLink(cfg, site, db, Metrics(), threading.Event(), document_builder=builder,
                      command_handler=handler, poll_interval_s=0.05, stats_interval_s=0.0,
                      reconnect_min_s=0.05, reconnect_max_s=0.5, session_expiry_s=60)

    first = link(stuck)
    first.start()
    assert first.wait_connected(10)
    deadline = time.monotonic() + 10
    while not entered.is_set() and time.monotonic() < deadline:  # subscribe is asynchronous
        publish.single(f"{first.base}/cmd/sale", b'{"txn": "R-1"}', qos=1,
                       hostname=mqtt5_broker.host, port=mqtt5_broker.port)
        entered.wait(0.3)
    assert entered.is_set()
    first.stop(timeout=1)  # the handler is still busy: its command is not acknowledged
    release.set()
    second = link(lambda name, payload: got.append(payload))
    second.start()
    try:
        wait_until(lambda: b'{"txn": "R-1"}' in got, what="the redelivered command")
    finally:
        second.stop(timeout=2)


def test_an_idle_link_sleeps_until_its_poll_and_wakes_for_what_is_due(
    mqtt_broker: Any, db: Database, make_link: LinkFactory, mqtt_collector: Any
) -> None:
    """Idle, the publisher queries nothing until its (long) poll: rows come with notify(),
    PUBACKs and connections wake it. Rows acknowledged move the head: it is announced once
    the head interval is up, and the gauges are refreshed while rows are pending."""
    link = make_link(mqtt_broker, protocol="5" if mqtt_broker.supports_v5 else "3.1.1",
                     poll_interval_s=3600.0, stats_interval_s=0.2, head_interval_s=0.2)
    col = mqtt_collector(mqtt_broker, link.head_topic)
    link.start()
    assert link.wait_connected(10)
    commit(db, [ev(i, "idle") for i in range(3)])
    link.notify()
    wait_until(lambda: depth(db) == 0, what="rows acknowledged")
    # The head moved: announced within its interval without any further wake-up.
    col.wait_for(lambda ms: any(json.loads(m.payload)["published_through"] >= 3 for m in ms))
    reg = link.metrics.registry
    wait_until(lambda: reg.get_sample_value("rfidd_outbox_depth") == 0, what="depth gauge")
    wait_until(lambda: link._idle_wait() > 600, what="the publisher idle until its poll")
