"""The store daemon as its own OS process (SIGKILLed and restarted mid-flow), the workshop
in-process: items commissioned at the workshop are received and sold at the store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
from test_lifecycle_flow import GTIN, Site, site_config, wait

from inventory.epc import decode, sgtin96_hex
from rfidd.lifecycle.cli import call
from rfidd.lifecycle.relay import AsnRelay

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# What the lead's app.py wiring will do; here so the test runs a real separate process.
STORE_MAIN = """
import sys
from rfidd.app import Daemon
from rfidd.cli import install_signal_handlers
from rfidd.config import load_config
d = Daemon(load_config(sys.argv[1]), ops_settings=None)
install_signal_handlers(d.stop_event)
try:
    d.start()
    print("READY", flush=True)
    d.run_until_stopped()
finally:
    d.stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_store(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", STORE_MAIN, str(conf)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=log.open("ab"))
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == b"READY", log.read_text()[-2000:]
    return p


def test_store_process_survives_sigkill_and_sells_once(
        mqtt5_broker: Any, mqtt_collector: Any, tmp_path: Path) -> None:
    prefix = f"rfidd-test/{uuid.uuid4().hex[:8]}"
    relay = AsnRelay(mqtt5_broker.host, mqtt5_broker.port, topic_prefix=prefix,
                     share_group=None)
    relay.start()
    assert relay.subscribed.wait(10)
    col = mqtt_collector(mqtt5_broker, f"{prefix}/st/#")
    port = free_port()
    conf = tmp_path / "store.toml"
    conf.write_text(f"""
[site]
id = "st"
name = "Store"
sgln = "urn:epc:id:sgln:0614141.00002.0"
timezone = "Europe/Paris"
[database]
url = "sqlite:///{tmp_path / 'st.db'}"
[mqtt]
url = "mqtt://{mqtt5_broker.host}:{mqtt5_broker.port}"
topic_prefix = "{prefix}"
[http]
port = {port}
[zones.stock]
kind = "stock"
""")
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "store.log"
    store = start_store(conf, log)
    ws = Site(site_config("ws", "workshop", "urn:epc:id:sgln:0614141.00001.0", prefix,
                          mqtt5_broker, f"sqlite:///{tmp_path / 'ws.db'}", {"bench": "bench"}))
    epcs = [sgtin96_hex(GTIN, n, 7) for n in (201, 202)]
    try:
        call(ws.api, "POST", "/api/v1/lifecycle/commissioning/sessions",
             {"gtin": GTIN, "expected": 2})
        ws.readers["r1"].read(epcs)
        wait(lambda: all(ws.state(e) == "commissioned" for e in epcs), what="commissioned")
        st_, res = call(ws.api, "POST", "/api/v1/lifecycle/ship",
                        {"txn": "ASN-2P", "to_site": "st", "epcs": epcs})
        assert st_ == 200, res

        def state(e: str) -> str | None:
            s, body = call(api, "GET", f"/api/v1/lifecycle/items/{e}")
            return body["state"]["status"] if s == 200 and body["state"] else None

        wait(lambda: all(state(e) == "in_transit" for e in epcs), what="shipment booked")
        s, res = call(api, "POST", "/api/v1/lifecycle/receive", {"txn": "ASN-2P", "epcs": epcs})
        assert s == 200, res

        store.send_signal(signal.SIGKILL)  # power cut right after the reception
        store.wait(10)
        store = start_store(conf, log)
        assert all(state(e) == "in_stock" for e in epcs)

        sale = json.dumps({"txn": "R-77", "epcs": epcs})
        for _ in range(3):
            mqtt_publish.single(f"{prefix}/st/cmd/sale", sale, qos=1,
                                hostname=mqtt5_broker.host, port=mqtt5_broker.port)
        wait(lambda: all(state(e) == "sold" for e in epcs), what="sold")

        def events(ms: list[Any]) -> list[dict[str, Any]]:
            return [e for m in ms if m.topic == f"{prefix}/st/epcis"
                    for e in json.loads(m.payload)["epcisBody"]["eventList"]]
        col.wait_for(lambda ms: sum(e.get("bizStep") == "retail_selling"
                                    for e in events(ms)) >= 2, timeout=15)
        store.send_signal(signal.SIGTERM)
        assert store.wait(15) == 0, log.read_text()[-2000:]
        evs = events(col.messages)
        by_step: dict[str, set[str]] = {}
        for e in evs:
            by_step.setdefault(e.get("bizStep", "observe"), set()).add(e["eventID"])
        assert len(by_step["receiving"]) == 2 and len(by_step["retail_selling"]) == 2
        uris = {decode(e).uri for e in epcs}
        assert {u for e in evs for u in e["epcList"]} == uris
    finally:
        if store.poll() is None:
            store.kill()
            store.wait(5)
        ws.daemon.stop()
        relay.stop()
