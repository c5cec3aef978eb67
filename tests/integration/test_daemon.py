"""The walking skeleton over real sockets: simulator -> sllurp -> daemon -> DB -> MQTT."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from inventory.epc import decode
from rfidd.app import Daemon, Timings
from rfidd.demo import demo_config, run_demo
from rfidd.store.models import ZonePresence
from simulator import Scenario, SimulatedSite

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "demo-store.toml"


@pytest.fixture(scope="module")
def epcis_validator() -> Any:
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    return jsonschema.Draft7Validator(schema)


def _clear_retained(broker: Any, site_id: str, readers: list[str], protocol: str) -> None:
    """Leave the shared broker as found: no retained status of a test site lingers for the
    next HQ that subscribes to rfidd/v1/+/status."""
    import paho.mqtt.publish as publish

    topics = [f"rfidd/v1/{site_id}/status",
              *(f"rfidd/v1/{site_id}/readers/{r}/status" for r in readers)]
    publish.multiple([{"topic": t, "payload": b"", "qos": 1, "retain": True} for t in topics],
                     hostname=broker.host, port=broker.port)


def _epcs_of(docs: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for doc in docs:
        for ev in doc["epcisBody"]["eventList"]:
            out.update(ev.get("epcList", []))
    return out


def test_demo_publishes_schema_valid_epcis_for_every_presented_item(
    mqtt_broker: Any, mqtt_collector: Any, epcis_validator: Any
) -> None:
    protocol = "5" if mqtt_broker.supports_v5 else "3.1.1"
    site_id = f"demo-{uuid.uuid4().hex[:8]}"  # a shared broker may carry other runs' demos
    col = mqtt_collector(mqtt_broker, f"rfidd/v1/{site_id}/#", protocol=protocol)
    out = io.StringIO()
    result = run_demo(seconds=11, mqtt_url=f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}",
                      mqtt_protocol=protocol, console=Console(file=out, width=120),
                      site_id=site_id)
    assert result.exit_code == 0, out.getvalue()
    assert result.queued > 0 and result.sent == result.queued
    msgs = col.wait_for(lambda ms: len(_epcs_of(
        [json.loads(m.payload) for m in ms if m.topic.endswith("/epcis")]))
        >= len(result.presented_epcs), timeout=15)
    docs = [json.loads(m.payload) for m in msgs if m.topic.endswith("/epcis")]
    for doc in docs:
        errors = sorted(epcis_validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, errors[0].message
    expected = {decode(h).epcis_uri for h in result.presented_epcs}
    assert expected <= _epcs_of(docs)
    ids = [ev["eventID"] for d in docs for ev in d["epcisBody"]["eventList"]]
    others = [m for m in msgs if "/reports/" in m.topic or m.topic.endswith("/alerts")]
    assert len(ids) == len(set(ids)) == result.sent - len(others)
    status = [m for m in msgs if m.topic == f"rfidd/v1/{site_id}/status"]
    assert [m.payload for m in status][-1] == b"offline"
    text = out.getvalue()
    assert "What rfidd saw" in text and "queued in the outbox" in text
    # The demo's ASN leaves two shipped items off and lists two that never came.
    assert result.reception is not None
    totals = result.reception["totals"]
    assert (totals["missing"], totals["unexpected"]) == (2, 2), totals
    assert totals["received"] == 34
    reports = [m for m in msgs if m.topic == f"rfidd/v1/{site_id}/reports/reception"]
    assert len(reports) == 1
    assert json.loads(reports[0].payload)["totals"] == totals
    # The unsold item walked through the exit: one alert, on the broker too.
    assert [a["type"] for a in result.alerts] == ["exit_unsold"]
    assert len([m for m in msgs if m.topic == f"rfidd/v1/{site_id}/alerts"]) == 1
    _clear_retained(mqtt_broker, site_id, list(Scenario.load(SCENARIO).readers), protocol)


def test_demo_without_broker_exits_zero() -> None:
    out = io.StringIO()
    result = run_demo(seconds=4, console=Console(file=out, width=120))
    assert result.exit_code == 0, out.getvalue()
    scenario = Scenario.load(SCENARIO)
    initial = {}
    for item in scenario.items():
        initial[item.zone] = initial.get(item.zone, 0) + 1
    # Before the timeline's first step every initial item was located in its own zone.
    assert result.located.get("stockroom", 0) >= initial["stockroom"] - 5
    assert result.located.get("floor", 0) >= initial["floor"]
    # Installation day: the stock found on the shelves went on the books first, so a count
    # on the page expects it (not "0 of 0"), and the demo says so.
    shelves = initial["stockroom"] + initial["floor"]
    assert shelves - 5 <= result.taken_over <= shelves, result.taken_over
    assert f"{result.taken_over} items put on the books" in " ".join(out.getvalue().split())


def test_daemon_on_postgresql_locates_every_item(postgres_url: str) -> None:
    scenario = Scenario.load(SCENARIO)
    with SimulatedSite(scenario, run_timeline=False) as site:
        cfg = demo_config(scenario, site.ports, postgres_url, None)
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.2, sweep_s=0.5))
        daemon.start()
        try:
            deadline = time.monotonic() + 30
            assert daemon.db is not None
            while time.monotonic() < deadline:
                with daemon.db.session() as s:
                    n = s.query(ZonePresence).count()
                if n == len(scenario.items()):
                    break
                time.sleep(0.3)
            assert n == len(scenario.items())
            with daemon.db.session() as s:
                zones = {r.epc: r.zone for r in s.query(ZonePresence)}
            assert zones == {i.epc_hex: i.zone for i in scenario.items()}
        finally:
            daemon.stop()


def _write_config(tmp_path: Path, ports: dict[str, int], broker: Any, protocol: str,
                  site_id: str) -> Path:
    blocks = []
    for name, ants in (
        ("stockroom-1", {1: "stockroom", 2: "stockroom"}),
        ("floor-1", {1: "floor", 2: "floor", 3: "floor", 4: "floor"}),
        ("backdoor-1", {1: "reception", 2: "exit"}),
    ):
        antennas = ", ".join(f'{a} = "{z}"' for a, z in ants.items())
        blocks.append(
            f'[readers.{name}]\nkind = "llrp"\naddress = "127.0.0.1"\n'
            f"antennas = {{ {antennas} }}\n"
            f"[readers.{name}.llrp]\nport = {ports[name]}\nkeepalive_s = 1.0\n"
            "report_every_n_tags = 50\nreport_timeout_ms = 200\n"
        )
    readers = "\n".join(blocks)
    text = f"""
[site]
id = "{site_id}"
name = "Integration store"
sgln = "urn:epc:id:sgln:3760001.00001.0"
timezone = "Europe/Paris"
company_prefixes = ["3760001"]

[database]
url = "sqlite:///{tmp_path / 'rfidd.db'}"
batch_max_ms = 100

[mqtt]
url = "mqtt://{broker.host}:{broker.port}"
protocol = "{protocol}"
client_id = "rfidd-it-{os.getpid()}"

[http]
port = 0

[zones.stockroom]
kind = "stock"
[zones.floor]
kind = "floor"
[zones.reception]
kind = "reception"
[zones.exit]
kind = "exit"

{readers}
"""
    path = tmp_path / "rfidd.toml"
    path.write_text(text)
    return path


def test_rfidd_run_publishes_then_stops_cleanly_on_sigterm(
    tmp_path: Path, mqtt_broker: Any, mqtt_collector: Any
) -> None:
    protocol = "5" if mqtt_broker.supports_v5 else "3.1.1"
    scenario = Scenario.load(SCENARIO)
    site_id = f"it-{uuid.uuid4().hex[:8]}"
    col = mqtt_collector(mqtt_broker, f"rfidd/v1/{site_id}/#", protocol=protocol)
    with SimulatedSite(scenario, run_timeline=False) as site:
        cfg = _write_config(tmp_path, site.ports, mqtt_broker, protocol, site_id)
        check = subprocess.run([sys.executable, "-m", "rfidd.cli", "check-config", str(cfg)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([sys.executable, "-m", "rfidd.cli", "run", "-c", str(cfg)],
                                stderr=subprocess.PIPE, text=True)
        try:
            expected = {decode(i.epc_hex).epcis_uri for i in scenario.items()}
            col.wait_for(lambda ms: expected <= _epcs_of(
                [json.loads(m.payload) for m in ms if m.topic.endswith("/epcis")]), timeout=30)
            col.wait_for(lambda ms: {m.topic for m in ms if m.payload == b"online"} >= {
                f"rfidd/v1/{site_id}/status", f"rfidd/v1/{site_id}/readers/floor-1/status"})
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
    col.wait_for(lambda ms: [m.payload for m in ms
                             if m.topic == f"rfidd/v1/{site_id}/status"][-1:] == [b"offline"])
    assert "rfidd stopped" in err
    _clear_retained(mqtt_broker, site_id, list(scenario.readers), protocol)


def test_rfidd_run_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nid = "x"\nname = "x"\nsgln = "urn:epc:id:sgln:3760001.00001.0"\n'
                   "[zones.a]\nkind = \"shelf\"\n")
    proc = subprocess.run([sys.executable, "-m", "rfidd.cli", "run", "-c", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "zones.a.kind" in proc.stderr


def _run_with_database(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "x"\nname = "x"\nsgln = "urn:epc:id:sgln:3760001.00001.0"\n'
                   f'[database]\nurl = "{url}"\n[mqtt]\nenabled = false\n'
                   '[http]\nenabled = false\n[zones.floor]\nkind = "floor"\n')
    return subprocess.run([sys.executable, "-m", "rfidd.cli", "run", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def test_rfidd_run_exits_75_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    """A database that cannot be opened now is temporary (75: systemd's Restart= retries),
    not a configuration error (78: systemd stops trying)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc = _run_with_database(tmp_path, f"sqlite:///{blocker}/rfidd.db")
    assert proc.returncode == 75, proc.stderr[-1500:]
    assert "temporary failure" in proc.stderr


def test_rfidd_run_exits_78_for_an_unsupported_database(tmp_path: Path) -> None:
    proc = _run_with_database(tmp_path, "oracle://db.example/rfidd")
    assert proc.returncode == 78, proc.stderr[-1500:]
    assert "database.url" in proc.stderr  # named with its key and line
