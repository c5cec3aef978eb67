"""HQ's relay signs the shipment it forwards (mqtt.relay_signing_key_file), so a site that
requires HQ-signed commands accepts a transfer between stores; without HQ's key the site
refuses it and counts it. Real Mosquitto (a private one), the site's real command path
(HqLink, CommandInbox, CommandGuard)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
from conftest import MosquittoProcess
from fakes import FakeReader
from joserfc import jws
from joserfc.jwk import OKPKey
from waits import wait_until

from inventory.epc import sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.command_auth import CommandGuard
from rfidd.config import Config, MqttConfig
from rfidd.hq.relay import AsnRelay
from rfidd.hq.signing import write_key_pair
from rfidd.lifecycle.cli import call
from rfidd.metrics import Metrics
from rfidd.mqtt import HqLink
from rfidd.store.db import Database, open_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = "rfidd/v1"
ORIGIN = "ws"


def asn_doc(asn_id: str, destination: str) -> bytes:
    return json.dumps({"asn_id": asn_id, "origin": ORIGIN, "destination": destination,
                       "shipped_at": "2026-01-05T10:00:00Z",
                       "epcs": [sgtin96_hex("00614141123452", n, 7) for n in (1, 2)],
                       "lines": []}).encode()


@dataclass
class Site:
    """A site whose command path requires HQ-signed state-changing commands."""

    id: str
    link: HqLink
    handled: list[tuple[str, bytes]]
    broker: Any

    def senders(self, sender: str, result: str) -> float:
        return self.link.metrics.registry.get_sample_value(
            "rfidd_command_senders_total", {"sender": sender, "result": result}) or 0.0

    def publish(self, topic: str, payload: bytes) -> None:
        mqtt_publish.single(topic, payload, qos=1, hostname=self.broker.host,
                            port=self.broker.port)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_key_pair(tmp_path / "hq-keys")


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    d = open_database(sqlite_url)
    yield d
    d.dispose()


@pytest.fixture
def site(private_mosquitto: MosquittoProcess, db: Database,
         keys: tuple[Path, Path]) -> Iterator[Site]:
    broker = private_mosquitto.broker
    site_id = f"st{uuid.uuid4().hex[:6]}"
    guard = CommandGuard(site_id, require_signed=True, public_key_file=keys[1])
    handled: list[tuple[str, bytes]] = []

    def handler(name: str, payload: bytes) -> None:
        handled.append((name, guard.check(name, payload)))

    cfg = MqttConfig.model_validate({
        "url": f"mqtt://{broker.host}:{broker.port}", "topic_prefix": PREFIX,
        "client_id": f"rfidd-{site_id}", "keepalive_s": 5,
        "require_signed_commands": True, "command_public_key_file": str(keys[1])})
    stop = threading.Event()
    link = HqLink(cfg, site_id, db, Metrics(), stop,
                  document_builder=lambda events, *_a: {"events": events},
                  command_handler=handler, command_screen=guard.screen,
                  poll_interval_s=0.05, stats_interval_s=0.0, reconnect_min_s=0.05,
                  reconnect_max_s=0.5)
    link.start()
    s = Site(site_id, link, handled, broker)
    try:
        assert link.wait_connected(10)
        # The subscription is asynchronous: an informative command until it is handled.
        wait_until(lambda: s.publish(f"{link.base}/cmd/ping", b"{}") is None
                   and any(n == "ping" for n, _ in handled), what="the site's subscription")
        yield s
    finally:
        stop.set()
        link.stop(timeout=2)


def _relay(site: Site, key_file: Path | None) -> AsnRelay:
    relay = AsnRelay(site.broker.host, site.broker.port, topic_prefix=PREFIX, share_group=None,
                     signing_key_file=key_file)
    relay.start()
    assert relay.wait_subscribed(10)
    return relay


def test_a_relayed_shipment_signed_by_hq_is_accepted(site: Site,
                                                      keys: tuple[Path, Path]) -> None:
    relay = _relay(site, keys[0])
    try:
        doc = asn_doc("ASN-S1", site.id)
        site.publish(f"{PREFIX}/{ORIGIN}/asn", doc)
        wait_until(lambda: {n for n, _ in site.handled} >= {"asn", "shipment"},
                   what="the relayed asn and shipment handled")
        got = dict(site.handled)
        assert got["shipment"] == doc  # the origin's exact bytes, verified
        assert got["asn"] == doc
        assert site.senders("hq", "queued") == 1  # the shipment, signed
        assert site.senders("hq", "refused") == 0
        assert site.senders("unsigned", "refused") == 0
        wait_until(lambda: relay.stats["forwarded"] == 1, what="the forward counted")
    finally:
        relay.stop()


def test_forged_and_unsigned_shipments_are_refused(site: Site) -> None:
    topic = f"{site.link.base}/cmd/shipment"
    doc = asn_doc("ASN-F1", site.id)
    forged = jws.serialize_compact({"alg": "Ed25519"}, doc, OKPKey.generate_key("Ed25519"),
                                   algorithms=["Ed25519"]).encode()
    site.publish(topic, forged)
    site.publish(topic, doc)
    wait_until(lambda: site.senders("forged", "refused") == 1
               and site.senders("unsigned", "refused") == 1, what="both refused")
    assert "shipment" not in {n for n, _ in site.handled}


def test_a_relay_without_hqs_key_gets_its_shipment_refused_and_counted(site: Site) -> None:
    relay = _relay(site, None)
    try:
        site.publish(f"{PREFIX}/{ORIGIN}/asn", asn_doc("ASN-U1", site.id))
        wait_until(lambda: any(n == "asn" for n, _ in site.handled)
                   and site.senders("unsigned", "refused") == 1,
                   what="the asn handled and the unsigned shipment refused")
        assert "shipment" not in {n for n, _ in site.handled}
        assert site.senders("hq", "queued") == 0
    finally:
        relay.stop()


def test_an_asn_too_big_once_signed_is_dropped_not_sent(
        site: Site, keys: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Between 192 and 256 KiB an ASN fits the relay but its signed copy (base64) would not
    fit the site's command limit: dropped and counted at HQ, nothing half-sent."""
    relay = _relay(site, keys[0])
    try:
        big = asn_doc("ASN-B1", site.id) + b" " * (200 * 1024)  # still one valid ASN
        site.publish(f"{PREFIX}/{ORIGIN}/asn", big)
        wait_until(lambda: relay.stats["dropped"] == 1, what="the big ASN dropped")
        assert "ASN-B1: signed, " in caplog.text
        assert "exceed the site's command limit of 262144" in caplog.text
        site.publish(f"{PREFIX}/{ORIGIN}/asn", asn_doc("ASN-B2", site.id))
        wait_until(lambda: relay.stats["forwarded"] == 1, what="the next one forwarded")
        wait_until(lambda: sum(n == "shipment" for n, _ in site.handled) == 1,
                   what="the next shipment handled")
        assert all(json.loads(b)["asn_id"] == "ASN-B2" for n, b in site.handled
                   if n in ("asn", "shipment"))
    finally:
        relay.stop()


# ------------------------------------------------- the store daemon itself, end to end


@pytest.fixture
def store(private_mosquitto: MosquittoProcess, tmp_path: Path,
          keys: tuple[Path, Path]) -> Iterator[Any]:
    """A real store daemon requiring HQ-signed commands (HQ's public key from keygen)."""
    broker = private_mosquitto.broker
    cfg = Config.model_validate({
        "site": {"id": "st", "name": "st", "kind": "store",
                 "sgln": "urn:epc:id:sgln:0614141.00002.0", "timezone": "Europe/Paris"},
        "database": {"url": f"sqlite:///{tmp_path / 'st.db'}", "batch_max_ms": 20},
        "mqtt": {"url": f"mqtt://{broker.host}:{broker.port}", "topic_prefix": PREFIX,
                 "require_signed_commands": True, "command_public_key_file": str(keys[1])},
        "http": {"port": 0},
        "zones": {"stock": {"kind": "stock"}},
        "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1", "antennas": {"1": "stock"}}},
    })
    daemon = Daemon(cfg, timings=Timings(sweep_s=0.2),
                    reader_factory=lambda name, _rc, q: FakeReader(name, q),
                    ops_settings=None)
    daemon.start()
    try:
        assert daemon.hq is not None and daemon.hq.wait_connected(10)
        yield daemon
    finally:
        daemon.stop()


def _state(daemon: Any, epc: str) -> str | None:
    st, body = call(f"http://127.0.0.1:{daemon.api.port}", "GET",
                    f"/api/v1/lifecycle/items/{epc}")
    return body["state"]["status"] if st == 200 and body["state"] else None


def _commands(daemon: Any, result: str) -> float:
    return daemon.metrics.registry.get_sample_value(
        "rfidd_commands_total", {"command": "shipment", "result": result}) or 0.0


def _senders(daemon: Any, sender: str, result: str) -> float:
    return daemon.metrics.registry.get_sample_value(
        "rfidd_command_senders_total", {"sender": sender, "result": result}) or 0.0


@pytest.mark.parametrize("signed", [True, False])
def test_the_store_books_a_relayed_transfer_only_when_hq_signed_it(
        store: Any, private_mosquitto: MosquittoProcess, keys: tuple[Path, Path],
        signed: bool) -> None:
    broker = private_mosquitto.broker
    relay = AsnRelay(broker.host, broker.port, topic_prefix=PREFIX, share_group=None,
                     signing_key_file=keys[0] if signed else None)
    relay.start()
    try:
        assert relay.wait_subscribed(10)
        doc = asn_doc("ASN-E1", "st")
        epcs = json.loads(doc)["epcs"]
        # The site's subscription is asynchronous: the origin repeats its ASN until the store
        # answers the shipment (the store's booking is idempotent per ASN id).
        wait_until(lambda: mqtt_publish.single(f"{PREFIX}/{ORIGIN}/asn", doc, qos=1,
                                               hostname=broker.host, port=broker.port) is None
                   and _commands(store, "ok") + _commands(store, "rejected") >= 1,
                   what="the store's answer to the relayed shipment")
        if signed:
            wait_until(lambda: all(_state(store, e) == "in_transit" for e in epcs),
                       what="the transfer booked in transit at the store")
            assert _senders(store, "hq", "queued") >= 1
            assert _commands(store, "rejected") == 0
        else:
            assert _commands(store, "ok") == 0
            assert _senders(store, "unsigned", "refused") >= 1
            assert [_state(store, e) for e in epcs] == [None, None]
    finally:
        relay.stop()
