"""Workshop and store daemons on the real broker carry items from commissioning to sale.

HQ's part (relaying the workshop's ASN to the store) is `rfidd.lifecycle.relay.AsnRelay`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import paho.mqtt.publish as mqtt_publish
import pytest
from click.testing import CliRunner
from fakes import FakeReader

from inventory.epc import decode, sgtin96_hex
from rfidd.app import Daemon, Timings
from rfidd.config import Config
from rfidd.intake import IngestQueue
from rfidd.lifecycle.cli import call, lifecycle_cli, trace_command
from rfidd.lifecycle.relay import AsnRelay
from rfidd.lifecycle.service import LifecycleService

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
GTIN = "00614141123452"


def site_config(site: str, kind: str, sgln: str, prefix: str, broker: Any, db: str,
                zones: dict[str, str]) -> Config:
    return Config.model_validate({
        "site": {"id": site, "name": site, "kind": kind, "sgln": sgln,
                 "timezone": "Europe/Paris"},
        "database": {"url": db, "batch_max_ms": 20},
        "mqtt": {"url": f"mqtt://{broker.host}:{broker.port}", "topic_prefix": prefix},
        "http": {"port": 0},
        "zones": {z: {"kind": k} for z, k in zones.items()},
        "readers": {"r1": {"kind": "llrp", "address": "127.0.0.1",
                           "antennas": {str(i + 1): z for i, z in enumerate(zones)}}},
    })


@pytest.fixture
def validator() -> Any:
    return jsonschema.Draft7Validator(json.loads((DATA / "EPCIS-JSON-Schema.json").read_text()))


def wait(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Site:
    def __init__(self, cfg: Config) -> None:
        self.readers: dict[str, FakeReader] = {}

        def factory(name: str, _rc: Any, q: IngestQueue) -> FakeReader:
            self.readers[name] = FakeReader(name, q)
            return self.readers[name]

        self.daemon = Daemon(cfg, timings=Timings(sweep_s=0.2), reader_factory=factory,
                             ops_settings=None)
        self.daemon.start()
        assert self.daemon.lifecycle is not None
        self.service: LifecycleService = self.daemon.lifecycle
        assert self.daemon.api is not None and self.daemon.hq is not None
        self.api = f"http://127.0.0.1:{self.daemon.api.port}"
        assert self.daemon.hq.wait_connected(10)

    def state(self, epc: str) -> str | None:
        st, body = call(self.api, "GET", f"/api/v1/lifecycle/items/{epc}")
        return body["state"]["status"] if st == 200 and body["state"] else None


@pytest.fixture
def sites(mqtt5_broker: Any, tmp_path: Path) -> Iterator[tuple[str, Site, Site, AsnRelay]]:
    prefix = f"rfidd-test/{uuid.uuid4().hex[:8]}"
    relay = AsnRelay(mqtt5_broker.host, mqtt5_broker.port, topic_prefix=prefix,
                     share_group=None)
    relay.start()
    assert relay.subscribed.wait(10)
    ws = Site(site_config("ws", "workshop", "urn:epc:id:sgln:0614141.00001.0", prefix,
                          mqtt5_broker, f"sqlite:///{tmp_path / 'ws.db'}",
                          {"bench": "bench", "pack": "shipping"}))
    st = Site(site_config("st", "store", "urn:epc:id:sgln:0614141.00002.0", prefix,
                          mqtt5_broker, f"sqlite:///{tmp_path / 'st.db'}",
                          {"stock": "stock", "floor": "floor"}))
    try:
        yield prefix, ws, st, relay
    finally:
        for s in (ws, st):
            s.daemon.stop()
        relay.stop()


def docs_on(col: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in col.on(topic)]


def events_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for d in docs for e in d["epcisBody"]["eventList"]]


def test_commissioning_to_sale_across_two_daemons(
        sites: Any, mqtt5_broker: Any, mqtt_collector: Any, validator: Any) -> None:
    prefix, ws, st, relay = sites
    col = mqtt_collector(mqtt5_broker, f"{prefix}/#")
    epcs = [sgtin96_hex(GTIN, n, 7) for n in (101, 102, 103)]

    # workshop: a session for 3 items of GTIN, tags read at the bench
    status, sess = call(ws.api, "POST", "/api/v1/lifecycle/commissioning/sessions",
                        {"gtin": GTIN, "expected": 3})
    assert status == 201, sess
    ws.readers["r1"].read(epcs, antenna=1)
    wait(lambda: call(ws.api, "GET", "/api/v1/lifecycle/commissioning/sessions/"
                      + sess["id"])[1]["commissioned"] == 3, what="3 commissioned")

    # pack + ship with an ASN; HQ relays it to the store
    status, res = call(ws.api, "POST", "/api/v1/lifecycle/ship", {
        "txn": "ASN-7", "to_site": "st", "carton": "urn:epc:id:sscc:0614141.1000000001",
        "epcs": epcs})
    assert status == 200 and res["accepted"] == 3, res
    wait(lambda: all(st.state(e) == "in_transit" for e in epcs), what="shipment at store")
    asn_msgs = col.on(f"{prefix}/st/cmd/asn")
    # The ASN id is the shipper's bizTransaction URI: both sites' events name one transaction.
    asn_id = json.loads(asn_msgs[0].payload)["asn_id"]
    assert asn_id.startswith("urn:epcglobal:cbv:bt:") and asn_id.endswith(":ASN-7")

    # store: receive, then sell over MQTT (twice: the repeat is a no-op)
    status, res = call(st.api, "POST", "/api/v1/lifecycle/receive", {"txn": asn_id,
                                                                     "epcs": epcs})
    assert status == 200 and res["accepted"] == 3, res
    sale = json.dumps({"txn": "R-1001", "epcs": epcs[:2]})
    host, port = mqtt5_broker.host, mqtt5_broker.port
    for _ in range(2):
        mqtt_publish.single(f"{prefix}/st/cmd/sale", sale, qos=1, hostname=host, port=port)
    wait(lambda: all(st.state(e) == "sold" for e in epcs[:2]), what="sold")

    # malformed commands: error replies, the daemon keeps going
    mqtt_publish.single(f"{prefix}/st/cmd/sale", '{"txn": "R-1002", "epcs": ["nothex"], '
                        '"till": 4}', qos=1, hostname=host, port=port)
    mqtt_publish.single(f"{prefix}/st/cmd/sale", "not json", qos=1, hostname=host, port=port)
    def errors_of(ms: list[Any]) -> list[str]:
        return [json.loads(m.payload)["error"] for m in ms if m.topic == f"{prefix}/st/errors"]
    errors = errors_of(col.wait_for(lambda ms: sum(
        "command sale" in e for e in errors_of(ms)) >= 2))
    # (no store-operations service here: the relayed cmd/asn is an unknown command, answered)
    assert any(e.startswith("unknown command 'asn'") for e in errors), errors
    assert any("epcs" in e and "till: unknown field" in e for e in errors), errors
    assert any("not JSON" in e for e in errors), errors

    # selling a sold item is rejected and reported to HQ; the CLI sells the third item
    runner = CliRunner(env={"COLUMNS": "200"})
    r = runner.invoke(lifecycle_cli, ["sell", "--txn", "R-1003", "--api", st.api, epcs[0]])
    assert r.exit_code == 1 and "already sold in transaction R-1001" in r.output, r.output
    r = runner.invoke(lifecycle_cli, ["sell", "--txn", "R-1004", "--api", st.api,
                                      decode(epcs[2]).uri or ""])
    assert r.exit_code == 0, r.output
    alerts = col.wait_for(lambda ms: any(m.topic == f"{prefix}/st/alerts" for m in ms))
    alert = json.loads(next(m for m in alerts if m.topic == f"{prefix}/st/alerts").payload)
    assert alert["reason"] == "already_done" and alert["epc"] == epcs[0]
    assert st.service.rejections.labels("sell", "already_done")._value.get() == 1

    # every EPCIS document valid; each item's story complete, each event once
    def complete(ms: list[Any]) -> bool:
        evs = events_of([json.loads(m.payload) for m in ms if m.topic.endswith("/epcis")])
        return sum(1 for e in evs if e.get("bizStep") == "retail_selling") >= 3
    col.wait_for(complete, timeout=15)
    ws_docs, st_docs = docs_on(col, f"{prefix}/ws/epcis"), docs_on(col, f"{prefix}/st/epcis")
    for doc in ws_docs + st_docs:
        errs_ = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errs_, errs_[0].message
    for e in epcs:
        uri = decode(e).uri
        story = [(x["type"], x.get("bizStep")) for x in events_of(ws_docs) + events_of(st_docs)
                 if uri in x.get("epcList", []) + x.get("childEPCs", [])
                 and x.get("bizStep")]
        assert story == [("ObjectEvent", "commissioning"), ("AggregationEvent", "packing"),
                         ("ObjectEvent", "shipping"), ("ObjectEvent", "receiving"),
                         ("ObjectEvent", "retail_selling")], story
        desadv = {x["bizStep"]: [t["bizTransaction"] for t in x.get("bizTransactionList", [])
                                 if t["type"] == "desadv"]
                  for x in events_of(ws_docs) + events_of(st_docs)
                  if uri in x.get("epcList", []) and x.get("bizStep") in ("shipping",
                                                                          "receiving")}
        assert desadv["shipping"] == desadv["receiving"] == [asn_id], desadv
    ids = [x["eventID"] for x in events_of(ws_docs + st_docs)]
    assert len(ids) == len(set(ids))
    assert relay.stats["forwarded"] == 1

    # trace through the store daemon's API
    r = runner.invoke(trace_command, [epcs[0], "--api", st.api, "--json"])
    assert r.exit_code == 0, r.output
    hist = json.loads(r.output)
    assert [h["biz_step"] for h in hist["history"] if h["biz_step"]] == [
        "receiving", "retail_selling"]
    assert hist["state"]["status"] == "sold"
