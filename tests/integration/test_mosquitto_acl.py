"""The example broker settings of deploy/mosquitto/ against a real Mosquitto.

A site may publish only under its own prefix and read only its own `cmd/`; HQ reads every site
and commands every site; a packet past `max_packet_size` is refused by the broker. Every
negative check waits for the broker's own answer (a PUBACK or SUBACK reason code, or the
disconnect), never for a quiet period.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import free_port, missing_service, mosquitto_binary, wait_port
from paho.mqtt.enums import CallbackAPIVersion
from waits import wait_until

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {"store1": "pw-store1", "store2": "pw-store2", "rfidd-hq": "pw-hq"}
NOT_AUTHORIZED = 135
# Lines of the example that name machine paths; the test supplies its own.
_MACHINE = re.compile(r"^(listener|certfile|keyfile|cafile|password_file|acl_file|"
                      r"persistence_location)\b")


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    binary = mosquitto_binary()
    passwd_tool = shutil.which("mosquitto_passwd")
    if binary is None or passwd_tool is None:
        missing_service("mosquitto and mosquitto_passwd (to test the example ACL)")
    assert binary is not None and passwd_tool is not None
    pw = tmp_path / "passwd"
    for i, (user, secret) in enumerate(PASSWORDS.items()):
        subprocess.run([passwd_tool, *(["-c"] if i == 0 else []), "-b", str(pw), user, secret],
                       check=True, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    example = [ln for ln in (DEPLOY / "rfidd.conf").read_text().splitlines()
               if not _MACHINE.match(ln)]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", f"password_file {pw}",
        f"acl_file {DEPLOY / 'rfidd.acl'}", f"persistence_location {data}/",
        *(["user root"] if os.geteuid() == 0 else []), *example, ""]))
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        if not wait_port("127.0.0.1", port):
            pytest.fail(f"mosquitto did not start: {log.read_text()[-2000:]}")
        yield Broker(port, proc, log)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Client:
    """An MQTT 5 client that records PUBACK/SUBACK reason codes and received messages."""

    broker: Broker
    user: str
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"{self.user}-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        self.c.username_pw_set(self.user, PASSWORDS[self.user])
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.c.on_disconnect = lambda *_a: self.disconnected.set()
        connected = threading.Event()
        self.c.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if rc == 0 else None
        self.c.connect("127.0.0.1", self.broker.port)
        self.c.loop_start()
        wait_until(connected.is_set, f"{self.user} connected", timeout=10)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self.pubacks[mid] = int(rc.value)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: Any, _p: Any) -> None:
        self.subacks[mid] = [int(r.value) for r in rcs]

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """Publish QoS 1 and return the broker's PUBACK reason code (0: accepted)."""
        mid = self.c.publish(topic, payload, qos=1).mid
        wait_until(lambda: mid in self.pubacks, f"PUBACK of {topic}", timeout=10)
        return self.pubacks[mid]

    def subscribe(self, topic: str) -> int:
        """Subscribe QoS 1 and return the SUBACK reason code (1: granted QoS 1)."""
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        wait_until(lambda: mid in self.subacks, f"SUBACK of {topic}", timeout=10)
        return self.subacks[mid][0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(acl_broker: Broker) -> Iterator[dict[str, Client]]:
    made = {u: Client(acl_broker, u) for u in PASSWORDS}
    yield made
    for c in made.values():
        c.close()


def test_a_site_publishes_only_under_its_own_prefix(clients: dict[str, Client]) -> None:
    hq, s1 = clients["rfidd-hq"], clients["store1"]
    assert hq.subscribe("rfidd/v1/#") == 1
    for leaf in ("epcis", "status", "readers/door/status", "reports/count", "alerts", "errors",
                 "asn"):
        assert s1.publish(f"rfidd/v1/store1/{leaf}") == 0, leaf
    assert s1.publish("rfidd/v1/store2/epcis", b"forged") == NOT_AUTHORIZED
    assert s1.publish("rfidd/v1/store1/cmd/sale", b"self-command") == NOT_AUTHORIZED
    assert s1.publish("other/topic") == NOT_AUTHORIZED
    # HQ got the seven accepted messages and nothing forged: a marker published last proves the
    # refused ones would have arrived by now.
    assert s1.publish("rfidd/v1/store1/epcis", b"marker") == 0
    wait_until(lambda: (("rfidd/v1/store1/epcis", b"marker") in hq.received), "marker at HQ")
    assert len(hq.received) == 8
    assert all(t.startswith("rfidd/v1/store1/") and b"forged" not in p and "/cmd/" not in t
               for t, p in hq.received)


def test_every_topic_hq_reads_from_a_site_is_one_the_site_may_publish(
        clients: dict[str, Client]) -> None:
    """HQ's subscriptions are the feed contract: a leaf the ACL misses (the retained `seq`
    head, `replay` announcements) is silently missing at HQ, and gap repair with it."""
    from types import SimpleNamespace

    from rfidd.hq.consumer import HqConsumer

    fake = SimpleNamespace(prefix="rfidd/v1", v5=True, config=SimpleNamespace(share_group=""))
    filters = HqConsumer.subscriptions(fake)  # type: ignore[arg-type]
    s1 = clients["store1"]
    for f in filters:
        parts = f.split("/")
        assert parts[:3] == ["rfidd", "v1", "+"], f
        topic = "/".join(["rfidd", "v1", "store1", *("x" if p == "+" else p for p in parts[3:])])
        code = s1.publish(topic)  # 0x10 "no matching subscribers" is a success too
        assert code < 0x80, f"the ACL refuses {topic} (HQ reads {f}): reason code {code}"


def test_a_site_reads_only_its_own_commands_and_hq_sends_them(clients: dict[str, Client]
                                                              ) -> None:
    hq, s1, s2 = clients["rfidd-hq"], clients["store1"], clients["store2"]
    # Mosquitto 2.0 grants any subscription and applies the read ACL to each delivery.
    for topic in ("rfidd/v1/store1/cmd/#", "rfidd/v1/store2/cmd/#", "rfidd/v1/+/epcis"):
        assert s1.subscribe(topic) == 1
    assert s2.subscribe("rfidd/v1/store2/cmd/+") == 1
    assert hq.publish("rfidd/v1/store2/cmd/asn", b"for store2") == 0
    assert s2.publish("rfidd/v1/store2/epcis", b"store2 events") == 0
    assert hq.publish("rfidd/v1/store1/epcis", b"hq may not forge site events") == \
        NOT_AUTHORIZED
    assert hq.publish("rfidd/v1/store1/cmd/asn", b"for store1") == 0  # last: the marker
    wait_until(lambda: s1.received and s2.received, "each store's command")
    assert s1.received == [("rfidd/v1/store1/cmd/asn", b"for store1")]
    assert s2.received == [("rfidd/v1/store2/cmd/asn", b"for store2")]


def test_an_oversized_command_is_refused_by_the_broker(clients: dict[str, Client]) -> None:
    hq, s1 = clients["rfidd-hq"], clients["store1"]
    limit = int(re.search(r"^max_packet_size (\d+)", (DEPLOY / "rfidd.conf").read_text(),
                          re.M).group(1))  # type: ignore[union-attr]
    assert s1.subscribe("rfidd/v1/store1/cmd/#") == 1
    hq.c.publish("rfidd/v1/store1/cmd/catalog", b"x" * (limit + 1), qos=1)
    wait_until(hq.disconnected.is_set, "the broker dropping the oversized sender", timeout=20)
    # The broker is fine and the site got nothing: a new HQ connection still commands it.
    hq2 = Client(hq.broker, "rfidd-hq")
    try:
        assert hq2.publish("rfidd/v1/store1/cmd/asn", b"after") == 0
        wait_until(lambda: s1.received, "the next command")
        assert s1.received == [("rfidd/v1/store1/cmd/asn", b"after")]
    finally:
        hq2.close()
