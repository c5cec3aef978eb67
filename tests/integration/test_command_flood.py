"""A flood of HQ commands on the real broker never crowds out HQ's genuine (signed) ones, and
is counted per sender; wrong HTTP credentials are counted per client address, bounded."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from joserfc import jws
from joserfc.jwk import OKPKey
from prometheus_client import CollectorRegistry, Counter
from waits import wait_until

from rfidd.command_auth import CommandGuard
from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.mqtt import HqLink
from rfidd.mqtt_commands import CommandInbox
from rfidd.store.db import Database, open_database
from rfidd.web.security import AddressCounter

pytestmark = pytest.mark.integration

SALE = b'{"txn": "R-1", "epcs": ["3034E57E04001A00000003F3"]}'


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    d = open_database(sqlite_url)
    yield d
    d.dispose()


def _builder(events: list[dict[str, Any]], created: Any, sender: str) -> dict[str, Any]:
    return {"events": events}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_flood_never_crowds_out_hqs_signed_command(mqtt_broker: Any, db: Database,
                                                     tmp_path: Path, protocol: str) -> None:
    """Forged and unsigned sales by the hundred, while the site handles a slow command: each
    is refused on arrival (acknowledged, answered, counted), never queued, and HQ's signed
    sale behind them is queued and handled next."""
    if protocol == "5" and not mqtt_broker.supports_v5:
        pytest.skip("the shared broker speaks no MQTT 5")
    key = OKPKey.generate_key("Ed25519")
    pub = tmp_path / "hq.pub.pem"
    pub.write_bytes(key.as_pem(private=False))
    site = f"flood{uuid.uuid4().hex[:8]}"
    guard = CommandGuard(site, require_signed=True, public_key_file=pub)
    release = threading.Event()
    handled: list[str] = []

    def handler(name: str, payload: bytes) -> None:
        guard.check(name, payload)
        if name == "catalog":
            release.wait(20)  # a slow command (a big catalog) is being handled
        handled.append(name)

    cfg = MqttConfig.model_validate({
        "url": f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}", "protocol": protocol,
        "client_id": f"rfidd-flood-{uuid.uuid4().hex[:8]}", "keepalive_s": 5})
    stop = threading.Event()
    link = HqLink(cfg, site, db, Metrics(), stop, document_builder=_builder,
                  command_handler=handler, command_screen=guard.screen,
                  poll_interval_s=0.05, stats_interval_s=0.0, reconnect_min_s=0.05,
                  reconnect_max_s=0.5, session_expiry_s=60, command_queue_size=5,
                  persistent_session=protocol == "5")
    link.start()
    pub_client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311)
    try:
        assert link.wait_connected(10)
        reg = link.metrics.registry

        def senders(sender: str, result: str) -> float:
            return reg.get_sample_value("rfidd_command_senders_total",
                                        {"sender": sender, "result": result}) or 0.0

        pub_client.connect(mqtt_broker.host, mqtt_broker.port)
        pub_client.loop_start()
        topic = f"{link.base}/cmd/"
        # The subscription is asynchronous: a quick command until it is handled.
        wait_until(lambda: pub_client.publish(topic + "ping", b"{}", qos=1) is not None
                   and "ping" in handled, what="the subscription")
        pub_client.publish(topic + "catalog", b"[]", qos=1).wait_for_publish(10)
        wait_until(lambda: senders("unsigned", "queued") >= 1 + handled.count("ping")
                   and link.inbox.pending()["unsigned"] == 0, what="the slow one taken")
        queued_before = senders("unsigned", "queued")
        forged = jws.serialize_compact({"alg": "Ed25519"}, SALE, OKPKey.generate_key("Ed25519"),
                                       algorithms=["Ed25519"]).encode()
        infos = []
        for _ in range(100):
            infos.append(pub_client.publish(topic + "sale", forged, qos=1))
            infos.append(pub_client.publish(topic + "sale", SALE, qos=1))
        signed = jws.serialize_compact({"alg": "Ed25519"}, SALE, key, algorithms=["Ed25519"])
        infos.append(pub_client.publish(topic + "sale", signed.encode(), qos=1))
        for info in infos:
            info.wait_for_publish(10)
        wait_until(lambda: senders("hq", "queued") == 1, what="HQ's sale queued")
        wait_until(lambda: senders("forged", "refused") == 100
                   and senders("unsigned", "refused") == 100, what="the flood refused")
        assert senders("unsigned", "queued") == queued_before  # none of the flood queued
        assert sum(senders(s, "dropped") for s in ("hq", "unsigned", "forged")) == 0
        release.set()
        wait_until(lambda: "sale" in handled, what="HQ's sale handled")
        assert [h for h in handled if h != "ping"] == ["catalog", "sale"], handled
    finally:
        release.set()
        pub_client.loop_stop()
        pub_client.disconnect()
        stop.set()
        link.stop(timeout=2)


@dataclass
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1


@dataclass
class _Client:
    acked: list[int] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload))


@dataclass
class _Stats:
    commands_ok: int = 0
    commands_failed: int = 0
    commands_rejected: int = 0


def test_an_admissible_flood_fills_only_its_senders_queue(tmp_path: Path) -> None:
    """A flood HQ would accept (unsigned catalogs, signatures not required for them) fills
    the unsigned queue and no more; HQ's signed command has its own and is taken in turn."""
    key = OKPKey.generate_key("Ed25519")
    pub = tmp_path / "hq.pub.pem"
    pub.write_bytes(key.as_pem(private=False))
    guard = CommandGuard("s1", require_signed=True, public_key_file=pub)
    handled: list[str] = []
    metrics = Metrics()
    redeliveries: list[int] = []
    inbox = CommandInbox("s1", "p/s1/cmd/", "p/s1/errors", lambda n, _p: handled.append(n),
                         metrics, _Stats(), max_command_bytes=1 << 16, queue_size=5,
                         screen=guard.screen, redeliver=lambda: redeliveries.append(1))
    client = _Client()
    for mid in range(1, 51):
        inbox.receive(client, _Msg("p/s1/cmd/catalog", b"[]", mid), 1)  # type: ignore[arg-type]
    signed = jws.serialize_compact({"alg": "Ed25519"}, SALE, key, algorithms=["Ed25519"])
    inbox.receive(client, _Msg("p/s1/cmd/sale", signed.encode(), 99), 1)  # type: ignore[arg-type]
    assert inbox.pending() == {"hq": 1, "unsigned": 5, "forged": 0}

    def value(sender: str, result: str) -> float:
        return metrics.registry.get_sample_value(
            "rfidd_command_senders_total", {"sender": sender, "result": result}) or 0.0

    assert (value("unsigned", "queued"), value("unsigned", "dropped"), value("hq", "queued")) \
        == (5, 45, 1)
    assert client.acked == []  # dropped ones are left for the broker to redeliver
    done = threading.Event()
    t = threading.Thread(target=inbox.run, args=(lambda: client, lambda: 1, done.is_set))
    t.start()
    wait_until(lambda: len(handled) == 6, what="the queued commands handled")
    done.set()
    inbox.wake()  # as HqLink.stop does: the thread sleeps until a command or this
    t.join(5)
    assert not t.is_alive()
    assert handled.index("sale") == 0  # HQ's turn came first, not after the flood's five
    assert sorted(client.acked) == [1, 2, 3, 4, 5, 99]
    assert redeliveries == [1]  # once drained: the 45 left unacknowledged are asked for again


def test_without_a_session_to_redeliver_a_dropped_command_is_acked_and_answered() -> None:
    metrics = Metrics()
    inbox = CommandInbox("s1", "p/s1/cmd/", "p/s1/errors", lambda n, _p: None, metrics,
                         _Stats(), max_command_bytes=1 << 16, queue_size=2)
    client = _Client()
    for mid in range(1, 6):
        inbox.receive(client, _Msg("p/s1/cmd/catalog", b"[]", mid), 1)  # type: ignore[arg-type]
    assert inbox.pending()["unsigned"] == 2
    assert client.acked == [3, 4, 5]  # refused for good: no slot of the broker's window held
    assert [t for t, _ in client.published] == ["p/s1/errors"] * 3
    assert b"queue of unsigned commands is full (2); send it again" in client.published[0][1]


def test_failed_credentials_are_counted_per_address_with_a_bounded_label_set() -> None:
    reg = CollectorRegistry()
    counter = Counter("fails", "test", ["client"], registry=reg)
    count = AddressCounter(counter, limit=3)
    for i in range(10):
        count(f"192.0.2.{i}")
    count("192.0.2.0")
    labels = {s.labels["client"]: s.value for m in reg.collect() for s in m.samples
              if s.name == "fails_total"}
    assert labels == {"192.0.2.0": 2, "192.0.2.1": 1, "192.0.2.2": 1, "other": 7}
