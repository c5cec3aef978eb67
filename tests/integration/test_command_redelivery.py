"""HQ commands the site could not queue (its sender's queue full) on the real Mosquitto, MQTT 5
and 3.1.1: none is lost and none holds the broker's window.

MQTT 3.1.1 has no flow control: Mosquitto sends up to its max_inflight_messages (20)
unacknowledged. MQTT 5: the link's Receive Maximum is one sender's queue, but Mosquitto 2.0.11
does not hold to it strictly (seen: 6 unacknowledged commands sent with a maximum of 2, and all
of a session's unacknowledged ones resent at once on reconnecting). What does not fit is left
unacknowledged (persistent session), and a broker redelivers only on a new connection: so the
link, once its queues are drained, reconnects (a clean DISCONNECT: no Will) and the broker
redelivers them. Without a persistent session nothing would be redelivered: the command
is acknowledged and answered on .../errors (refused for good, HQ told), never left holding a
slot of the window.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from waits import wait_until

from rfidd.config import MqttConfig
from rfidd.metrics import Metrics
from rfidd.mqtt import ONLINE, HqLink
from rfidd.store.db import Database, open_database

pytestmark = pytest.mark.integration

QUEUE = 2
FLOOD = 12  # 3.1.1: 1 handled + QUEUE queued; the other 9 dropped (Mosquitto sends 20 at once)


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    d = open_database(sqlite_url)
    yield d
    d.dispose()


def _builder(events: list[dict[str, Any]], created: Any, sender: str) -> dict[str, Any]:
    return {"events": events}


class Site:
    """A link whose handler is held on its first command until released."""

    def __init__(self, broker: Any, db: Database, protocol: str, persistent: bool) -> None:
        self.release = threading.Event()
        self.handled: list[int] = []
        self._mu = threading.Lock()
        cfg = MqttConfig.model_validate({
            "url": f"mqtt://{broker.host}:{broker.port}", "protocol": protocol,
            "client_id": f"rfidd-redeliver-{uuid.uuid4().hex[:8]}", "keepalive_s": 5})
        self.link = HqLink(cfg, f"rd{uuid.uuid4().hex[:8]}", db, Metrics(), threading.Event(),
                           document_builder=_builder, command_handler=self.handler,
                           poll_interval_s=0.05, stats_interval_s=0.0, reconnect_min_s=0.05,
                           reconnect_max_s=0.5, session_expiry_s=60, command_queue_size=QUEUE,
                           persistent_session=persistent)

    def handler(self, name: str, payload: bytes) -> None:
        n = int(json.loads(payload)["n"])
        if n >= 0:
            self.release.wait(20)
        with self._mu:
            self.handled.append(n)

    def subscribed(self, hq: paho.Client, topic: str) -> None:
        """The subscription is asynchronous: quick commands until one is handled, then until
        every one sent meanwhile is (none left in the queue)."""
        wait_until(lambda: hq.publish(topic, b'{"n": -1}', qos=1) is not None
                   and -1 in self.handled, what="the subscription")
        wait_until(lambda: self.senders("queued") == len(self.handled)
                   and self.link.inbox.pending()["unsigned"] == 0, what="the quick ones done")

    def senders(self, result: str) -> float:
        return self.link.metrics.registry.get_sample_value(
            "rfidd_command_senders_total", {"sender": "unsigned", "result": result}) or 0.0


def _hq(broker: Any, protocol: str) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                    protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_commands_past_the_queue_are_all_handled_and_the_window_is_free_after(
        private_mosquitto: Any, db: Database, mqtt_collector: Any, protocol: str) -> None:
    broker = private_mosquitto.broker
    site = Site(broker, db, protocol, persistent=True)
    status = mqtt_collector(broker, site.link.status_topic, protocol=protocol)
    site.link.start()
    hq = _hq(broker, protocol)
    try:
        assert site.link.wait_connected(10)
        topic = f"{site.link.base}/cmd/catalog"
        site.subscribed(hq, topic)
        base = site.senders("queued")
        for i in range(FLOOD):
            hq.publish(topic, json.dumps({"n": i}).encode(), qos=1).wait_for_publish(10)
        # Held: the handler has 0, the queue QUEUE more; the rest dropped (3.1.1) or at the
        # broker (5: the link told it its Receive Maximum).
        wait_until(lambda: site.senders("queued") >= base + QUEUE, what="the queue full")
        if protocol == "3.1.1":
            wait_until(lambda: site.senders("dropped") >= 1, what="a command dropped")
        site.release.set()
        wait_until(lambda: set(range(FLOOD)) <= set(site.handled), timeout=30,
                   what=f"every one of the {FLOOD} commands handled")
        # The window is not held by anything: a later burst goes through on this link.
        for i in range(FLOOD, FLOOD + 5):
            hq.publish(topic, json.dumps({"n": i}).encode(), qos=1).wait_for_publish(10)
        wait_until(lambda: set(range(FLOOD + 5)) <= set(site.handled), timeout=30,
                   what="a later burst handled")
        # The reconnect that got the dropped ones redelivered was a clean one: no Will.
        payloads = [m.payload for m in status.messages]
        assert payloads and all(p == ONLINE for p in payloads), payloads
    finally:
        site.release.set()
        hq.loop_stop()
        hq.disconnect()
        site.link.stop(timeout=2)


def test_without_a_persistent_session_a_dropped_command_is_refused_and_answered(
        private_mosquitto: Any, db: Database, mqtt_collector: Any) -> None:
    """3.1.1, clean session: a reconnect would not bring it back, so it is refused for good:
    acknowledged (no slot of the window held) and answered on .../errors for HQ to resend."""
    broker = private_mosquitto.broker
    site = Site(broker, db, "3.1.1", persistent=False)
    errors = mqtt_collector(broker, site.link.errors_topic, protocol="3.1.1")
    site.link.start()
    hq = _hq(broker, "3.1.1")
    try:
        assert site.link.wait_connected(10)
        topic = f"{site.link.base}/cmd/catalog"
        site.subscribed(hq, topic)
        base = site.senders("queued")
        for i in range(FLOOD):
            hq.publish(topic, json.dumps({"n": i}).encode(), qos=1).wait_for_publish(10)
        wait_until(lambda: site.senders("queued") + site.senders("dropped") >= base + FLOOD,
                   what="every command received")
        dropped = int(site.senders("dropped"))
        assert dropped >= FLOOD - 1 - QUEUE - 1  # (a late quick one may hold a queue slot)
        answered = errors.wait_count(dropped)
        assert all("queue" in json.loads(m.payload)["error"] for m in answered)
        site.release.set()
        # Each command of the flood was either handled or refused and answered: none lost.
        wait_until(lambda: len([n for n in site.handled if n >= 0]) + dropped == FLOOD,
                   what="the queued ones handled")
        # No slot is held: 25 more (past Mosquitto's window of 20) still reach the site.
        for i in range(100, 125):
            hq.publish(topic, json.dumps({"n": -i}).encode(), qos=1).wait_for_publish(10)
        wait_until(lambda: -124 in site.handled, what="commands past the broker's window")
    finally:
        site.release.set()
        hq.loop_stop()
        hq.disconnect()
        site.link.stop(timeout=2)
