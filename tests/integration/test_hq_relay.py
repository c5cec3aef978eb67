"""The HQ ASN relay (rfidd.hq.relay): configured like the consumer (TLS, password file), kept
session (ASNs published while it is down are relayed when it returns), bad ASNs dropped and
counted without stopping it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
from conftest import Broker, MosquittoProcess, free_port, missing_service, mosquitto_binary
from prometheus_client import generate_latest
from tlsutil import issue, make_ca, write_password_file

from inventory.epc import sgtin96_hex
from rfidd.hq.config import parse_hq_config
from rfidd.hq.relay import AsnRelay, RelayError, RelayMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GTIN = "00614141123452"
USER = "rfidd-hq"
SECRET = f"pw-{uuid.uuid4().hex}"


def asn(asn_id: str, origin: str = "ws", destination: str = "st") -> str:
    return json.dumps({"asn_id": asn_id, "origin": origin, "destination": destination,
                       "shipped_at": "2026-01-05T10:00:00Z",
                       "epcs": [sgtin96_hex(GTIN, 7, 7)], "lines": []})


def wait(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


class TlsRelayBroker:
    def __init__(self, proc: MosquittoProcess, plain: int, tls: int, ca_file: Path) -> None:
        self.proc, self.plain, self.tls, self.ca_file = proc, plain, tls, ca_file


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRelayBroker]:
    """A private mosquitto: an anonymous plain listener (the test's side) and a TLS listener
    with a password (HQ's side)."""
    import os

    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto binary (for a private TLS broker)")
    assert binary is not None
    d = tmp_path_factory.mktemp("relay-tls")
    ca = make_ca(d / "pki", "relay test CA")
    server = issue(ca, d / "pki", "broker", ips=("127.0.0.1",))
    passwd = d / "passwd"
    write_password_file(passwd, {USER: SECRET})
    plain, tls = free_port(), free_port()
    m = MosquittoProcess(binary, d, port=plain)
    m.conf.write_text(
        "per_listener_settings true\n" + ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {plain} 127.0.0.1\nallow_anonymous true\n"
        + f"listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        + f"cafile {ca.cert_file}\ncertfile {server.cert_file}\nkeyfile {server.key_file}\n")
    m.start()
    try:
        yield TlsRelayBroker(m, plain, tls, ca.cert_file)
    finally:
        m.stop()


def test_relay_from_hq_config_over_tls_with_a_password_file(
        tls_broker: TlsRelayBroker, mqtt_collector: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    pw = tmp_path / "mqtt-password"
    pw.write_text(SECRET + "\n")
    cfg = parse_hq_config(f"""
[mqtt]
url = "mqtts://127.0.0.1:{tls_broker.tls}"
client_id = "hq-relay-{uuid.uuid4().hex[:6]}"
username = "{USER}"
password_file = "{pw}"
relay_share_group = ""
[mqtt.tls]
ca_file = "{tls_broker.ca_file}"
""")
    col = mqtt_collector(Broker("127.0.0.1", tls_broker.plain, True), "rfidd/v1/st/cmd/#")
    metrics = RelayMetrics()
    relay = AsnRelay.from_config(cfg.mqtt, metrics=metrics)
    assert relay.topic_filter == "rfidd/v1/+/asn"
    relay.start()
    try:
        assert relay.wait_subscribed(10), caplog.text
        mqtt_publish.single("rfidd/v1/ws/asn", asn("ASN-T1"), qos=1, hostname="127.0.0.1",
                            port=tls_broker.plain)
        ms = col.wait_for(lambda ms: len(ms) >= 2)
        assert sorted(m.topic for m in ms) == ["rfidd/v1/st/cmd/asn", "rfidd/v1/st/cmd/shipment"]
        assert json.loads(ms[0].payload)["asn_id"] == "ASN-T1"
        wait(lambda: relay.stats["forwarded"] == 1, "the forward counted")
        text = generate_latest(metrics.registry).decode()
        assert 'rfidd_hq_asn_relayed_total{result="forwarded"} 1.0' in text
        assert "rfidd_hq_asn_relay_connected 1.0" in text
    finally:
        relay.stop()
    assert SECRET not in caplog.text


def test_an_unreadable_password_file_is_named_not_guessed(tmp_path: Path) -> None:
    cfg = parse_hq_config(f"""
[mqtt]
url = "mqtts://127.0.0.1:8883"
username = "{USER}"
password_file = "{tmp_path / 'missing'}"
""")
    with pytest.raises(RelayError, match=r"ASN relay: mqtt.password_file .*missing: cannot read"):
        AsnRelay.from_config(cfg.mqtt)


def test_asns_sent_while_the_relay_is_down_wait_for_it_and_bad_ones_are_dropped(
        private_mosquitto: MosquittoProcess, mqtt_collector: Any) -> None:
    broker = private_mosquitto.broker
    prefix = f"t-{uuid.uuid4().hex[:6]}/v1"
    client_id = f"relay-{uuid.uuid4().hex[:6]}"
    col = mqtt_collector(broker, f"{prefix}/+/cmd/#")

    def publish(topic: str, payload: str) -> None:
        mqtt_publish.single(f"{prefix}/{topic}", payload, qos=1, hostname=broker.host,
                            port=broker.port)

    first = AsnRelay(broker.host, broker.port, topic_prefix=prefix, share_group=None,
                     client_id=client_id)
    first.start()
    assert first.wait_subscribed(10)
    first.stop()
    # While no relay runs: a good ASN, one claiming another origin, and garbage.
    publish("ws/asn", asn("ASN-D1"))
    publish("ws/asn", asn("ASN-D2", origin="other"))
    publish("ws/asn", "{not json")
    publish("ws/asn", asn("ASN-D3", destination="ws"))
    second = AsnRelay(broker.host, broker.port, topic_prefix=prefix, share_group=None,
                      client_id=client_id)
    second.start()
    try:
        col.wait_for(lambda ms: len(ms) >= 2)
        wait(lambda: second.stats["dropped"] == 3, "three bad ASNs dropped")
        # ... and the relay carries on with the next one.
        publish("ws/asn", asn("ASN-D4"))
        ms = col.wait_for(lambda ms: len(ms) >= 4)
        ids = sorted((m.topic.rsplit("/", 1)[1], json.loads(m.payload)["asn_id"]) for m in ms)
        assert ids == [("asn", "ASN-D1"), ("asn", "ASN-D4"),
                       ("shipment", "ASN-D1"), ("shipment", "ASN-D4")]
        assert all(m.topic.startswith(f"{prefix}/st/") for m in ms)
        wait(lambda: second.stats["forwarded"] == 2, "two forwarded")
    finally:
        second.stop()
