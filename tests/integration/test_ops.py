"""Store operations end to end over real sockets: simulated LLRP readers -> sllurp -> daemon with
its store-operations services -> SQLite/PostgreSQL -> outbox -> MQTT, driven through the
`rfidd ops` CLI and its HTTP API, the way staff and HQ use them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from inventory.epc import decode
from rfidd.app import Daemon, OpsServices, Timings
from rfidd.config import Config
from rfidd.demo import demo_config
from rfidd.ops import OpsSettings, ops_cli
from rfidd.store.models import Event, Item, OutboxMessage, ZonePresence
from simulator import Scenario, SimulatedSite
from simulator.scenario import ScenarioItem, action

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "simulator" / "scenarios" / "maison-catalog.csv"

SCENARIO = f"""
[scenario]
name = "ops-store"
seed = 11
catalog = "{CATALOG}"
company_prefix_digits = 7
serial_start = 5000

[zones.stockroom]
kind = "stock"
read_probability = 0.95
rssi_mean_dbm = -58.0
rssi_stddev_dbm = 3.0

[zones.floor]
kind = "floor"
read_probability = 0.9
rssi_mean_dbm = -62.0
rssi_stddev_dbm = 3.0

[zones.reception]
kind = "reception"
read_probability = 0.95
rssi_mean_dbm = -50.0
rssi_stddev_dbm = 3.0

[zones.exit]
kind = "exit"
read_probability = 0.98
rssi_mean_dbm = -45.0
rssi_stddev_dbm = 3.0

[readers.stockroom-1]
antennas = {{ 1 = "stockroom" }}
reads_per_s = 800

[readers.floor-1]
antennas = {{ 1 = "floor", 2 = "floor" }}
reads_per_s = 800

[readers.backdoor-1]
antennas = {{ 1 = "reception", 2 = "exit" }}
reads_per_s = 800

[[population]]
zone = "stockroom"
count = 40

[[population]]
zone = "floor"
count = 20
"""


def load_scenario(tmp_path: Path) -> Scenario:
    path = tmp_path / "ops-store.toml"
    path.write_text(SCENARIO)
    return Scenario.load(path)


@dataclass
class Store:
    site: Any
    daemon: Daemon
    ops: OpsServices
    cfg: Config
    api: str
    tmp: Path

    def cli(self, *args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(ops_cli, ["--api", self.api, *args])
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    def wait(self, what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.1)

    def zone_of(self, epc: str) -> str | None:
        with self.daemon.ctx.tracker_lock:
            return self.daemon.ctx.tracker.zone_of(epc)

    def located(self) -> dict[str, str]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            return {e: z for e, z in s.execute(select(ZonePresence.epc, ZonePresence.zone))}

    def outbox(self, topic: str) -> list[dict[str, Any]]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            rows = s.scalars(select(OutboxMessage.payload).where(OutboxMessage.topic == topic)
                             .order_by(OutboxMessage.id))
            return [json.loads(p) for p in rows]


@contextmanager
def running_store(tmp_path: Path, db_url: str, broker: Any = None,
                  settings: OpsSettings | None = None) -> Iterator[Store]:
    scenario = load_scenario(tmp_path)
    with SimulatedSite(scenario, run_timeline=False) as site:
        base = demo_config(scenario, site.ports, db_url,
                           f"mqtt://{broker.host}:{broker.port}" if broker else None)
        site_id = f"ops-{uuid.uuid4().hex[:8]}"
        cfg = base.model_copy(update={
            "site": base.site.model_copy(update={"id": site_id}),
            "http": base.http.model_copy(update={"enabled": True, "port": 0}),
            "presence": base.presence.model_copy(update={"departure_s": 30.0}),
            "mqtt": base.mqtt.model_copy(update={"client_id": f"rfidd-{site_id}"}),
        })
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.2, sweep_s=0.5, outbox_stats_s=0.5),
                        ops_settings=settings or OpsSettings(tick_s=0.2),
                        with_lifecycle=False)
        daemon.start()
        try:
            assert daemon.api is not None and daemon.scheduler is not None
            assert daemon.ops is not None
            store = Store(site, daemon, daemon.ops, cfg, f"http://127.0.0.1:{daemon.api.port}",
                          tmp_path)
            res = store.cli("catalog", "import", str(CATALOG))
            assert "product(s) imported" in res.output
            initial = {i.epc_hex: i.zone for i in scenario.items()}
            store.wait("every initial item located",
                       lambda: store.located() == initial, timeout=30)
            yield store
        finally:
            daemon.stop()


def _asn(asn_id: str, dest: str, epcs: list[str]) -> dict[str, Any]:
    return {"asn_id": asn_id, "origin": "WH-PARIS", "destination": dest,
            "shipped_at": "2024-05-02T08:00:00Z", "epcs": epcs, "lines": []}


def test_reception_with_planted_discrepancies_names_exactly_those(
    tmp_path: Path, sqlite_url: str, mqtt_broker: Any, mqtt_collector: Any
) -> None:
    twin = load_scenario(tmp_path)  # same seed: predicts the EPCs the shipment will carry
    shipped = twin.new_items("reception", 12, ["bags", "scarves"])
    phantom = [i.epc_hex for i in twin.new_items("reception", 2, ["bags"])]  # never shipped
    listed, unlisted = shipped[:9], shipped[9:]
    with running_store(tmp_path, sqlite_url, mqtt_broker) as st:
        protocol = "5" if mqtt_broker.supports_v5 else "3.1.1"
        col = mqtt_collector(mqtt_broker, f"rfidd/v1/{st.cfg.site.id}/#", protocol=protocol)
        asn = _asn("DESADV-0042", st.cfg.site.id, [i.epc_hex for i in listed] + phantom)
        asn_file = tmp_path / "asn.json"
        asn_file.write_text(json.dumps(asn))
        res = st.cli("asn", "import", str(asn_file))
        assert "new: DESADV-0042" in res.output and "reception session rcv-" in res.output

        arrived = st.site.apply(action(t=0, action="shipment", zone="reception", count=12,
                                       categories=["bags", "scarves"]))
        assert [i.epc_hex for i in arrived] == [i.epc_hex for i in shipped]
        sid = st.ops.reception.receptions()[0]["session_id"]
        st.wait("12 items read at reception",
                lambda: st.ops.reception.reception(sid)["progress"]["read"] == 12)

        res = st.cli("reception", "close", "--json")
        doc = json.loads(res.output)
        assert doc["session_id"] == sid
        assert {m["epc"] for m in doc["missing"]} == set(phantom)
        assert {u["epc"] for u in doc["unexpected"]} == {i.epc_hex for i in unlisted}
        assert {r["epc"] for r in doc["received"]} == {i.epc_hex for i in listed}
        assert doc["totals"]["expected"] == 11 and doc["complete"] is False
        names = {r["gtin"]: r["name"] for r in twin.catalog_rows()}
        for line in doc["lines"]:
            assert line["name"] == names[line["gtin"]]
        assert sum(ln["received"] for ln in doc["lines"]) == len(listed)

        topic = f"rfidd/v1/{st.cfg.site.id}/reports/reception"
        msgs = col.wait_for(lambda ms: any(m.topic == topic for m in ms), timeout=15)
        published = json.loads(next(m.payload for m in msgs if m.topic == topic))
        assert published == doc
        # Received items became `receiving` events against the ASN (desadv), in the same commit.
        assert st.daemon.db is not None
        with st.daemon.db.session() as s:
            rows = list(s.scalars(select(Event.payload).where(Event.biz_step == "receiving")))
            disp = dict(s.execute(select(Item.epc, Item.disposition)
                                  .where(Item.epc.in_([i.epc_hex for i in shipped]))).all())
        received = [json.loads(p) for p in rows]
        assert {decode(i.epc_hex).uri for i in listed} == {
            e for r in received for e in r["epcList"]}
        for r in received:
            assert r["disposition"] == "sellable_not_accessible"
            bt = r["bizTransactionList"][0]
            assert bt["type"] == "desadv" and bt["bizTransaction"].endswith(":DESADV-0042")
        assert {disp[i.epc_hex] for i in listed} == {"sellable_not_accessible"}
        assert {disp[i.epc_hex] for i in unlisted} == {None}
        shown = st.cli("reception", "show", sid)
        assert "Items to check" in shown.output and phantom[0] in shown.output

        # The same ASN again changes nothing; the same id with other content is refused.
        res = st.cli("asn", "import", str(asn_file))
        assert "identical): DESADV-0042" in res.output and "reception session" not in res.output
        assert len(st.ops.reception.receptions()) == 1
        asn_file.write_text(json.dumps({**asn, "epcs": asn["epcs"][:-1]}))
        res = st.cli("asn", "import", str(asn_file), ok=False)
        assert res.exit_code == 1 and "already imported with other content" in res.output


def _hold_and_drain(st: Store) -> None:
    st.site.hold(True)
    assert st.daemon.ingestor is not None
    stats = st.daemon.ingestor.stats
    last = -1
    while stats.reads != last:  # no more reads in flight
        last = stats.reads
        time.sleep(0.6)


def test_count_after_moves_and_removals_names_exactly_the_exceptions(
    tmp_path: Path, db_url: str
) -> None:
    with running_store(tmp_path, db_url) as st:
        items = st.site.world.items()
        stock = sorted(i.epc_hex for i in items if i.zone == "stockroom")
        floor = sorted(i.epc_hex for i in items if i.zone == "floor")
        moved, removed = stock[:4], stock[4:7] + floor[:1]
        _hold_and_drain(st)
        st.site.apply(action(t=0, action="move", epcs=moved, to="floor"))
        st.site.apply(action(t=0, action="remove", epcs=removed))
        extra: list[ScenarioItem] = st.site.apply(
            action(t=0, action="shipment", zone="floor", count=2))
        res = st.cli("count", "start", "stockroom", "floor")
        assert "60 items expected" in res.output
        cid = st.ops.counting.running_counts()[0]
        st.site.hold(False)
        present = set(stock + floor) - set(removed)
        st.wait("moved and new items located on the floor", lambda: all(
            st.zone_of(e) == "floor" for e in moved + [i.epc_hex for i in extra]))
        mark = st.ops.counting._counts[cid].start_mark
        st.wait("every present item read during the count", lambda: present <= {
            r.epc for r in st.daemon.ctx.tracker.touched_since(mark)})
        progress = st.cli("count", "progress", cid)
        assert "of 60 found" in progress.output

        res = st.cli("count", "stop", "--json")
        doc = json.loads(res.output)
        assert {(m["epc"], m["booked_zone"]) for m in doc["missing"]} == {
            (e, "floor" if e in floor else "stockroom") for e in removed}
        assert {(m["epc"], m["booked_zone"], m["found_zone"]) for m in doc["misplaced"]} == {
            (e, "stockroom", "floor") for e in moved}
        assert {(u["epc"], u["zone"], u["booked_zone"]) for u in doc["unexpected"]} == {
            (i.epc_hex, "floor", None) for i in extra}
        assert doc["totals"] == {"expected": 60, "found": 52, "missing": 4, "misplaced": 4,
                                 "unexpected": 2, "unidentified": 0}
        assert doc["accuracy"]["record"] < 1.0 and doc["missing"][0]["name"]

        # The report is stored, queued for HQ, and the counted items got cycle_counting events.
        assert st.outbox("reports/count") == [doc]
        assert doc["timezone"] == st.daemon.config.site.timezone  # HQ's charts: the site's day
        assert st.daemon.db is not None
        with st.daemon.db.session() as s:
            counted = [json.loads(p) for p in s.scalars(
                select(Event.payload).where(Event.biz_step == "cycle_counting"))]
        uris = {e for ev in counted for e in ev["epcList"]}
        assert uris == {decode(e).uri for e in present | {i.epc_hex for i in extra}}
        assert all(ev["action"] == "OBSERVE" for ev in counted)
        table = st.cli("count", "report", cid)
        assert "Items to check" in table.output and "misplaced" in table.output
        csv_out = st.cli("count", "report", cid, "--csv", "-")
        assert csv_out.output.count("\nmissing,") == 4
        assert csv_out.output.count("\nmisplaced,") == 4


def test_unsold_item_leaving_raises_exactly_one_alert_sold_item_passes(
    tmp_path: Path, sqlite_url: str, mqtt_broker: Any, mqtt_collector: Any
) -> None:
    with running_store(tmp_path, sqlite_url, mqtt_broker) as st:
        protocol = "5" if mqtt_broker.supports_v5 else "3.1.1"
        col = mqtt_collector(mqtt_broker, f"rfidd/v1/{st.cfg.site.id}/#", protocol=protocol)
        floor = sorted(i.epc_hex for i in st.site.world.items() if i.zone == "floor")
        thief, customer = floor[0], floor[1]
        assert st.daemon.db is not None
        with st.daemon.db.write() as s:  # the POS sold this one
            s.execute(update(Item).where(Item.epc == customer)
                      .values(disposition="retail_sold", biz_step="retail_selling"))
        st.site.apply(action(t=0, action="exit", epcs=[customer, thief], zone="exit"))
        st.wait("both items seen at the exit",
                lambda: st.located().get(thief) == "exit" and st.located().get(customer) == "exit")
        time.sleep(1.5)  # more exit reads of the same items: debounced
        st.site.apply(action(t=0, action="remove", epcs=[customer, thief]))

        topic = f"rfidd/v1/{st.cfg.site.id}/alerts"
        col.wait_for(lambda ms: any(m.topic == topic for m in ms), timeout=15)
        st.wait("outbox drained", lambda: st.daemon.hq is not None and all(
            r.topic != "alerts" for r in _pending(st)))
        time.sleep(0.5)
        alerts = [json.loads(m.payload) for m in col.on(topic)]
        assert len(alerts) == 1, alerts
        assert alerts[0]["epc"] == thief and alerts[0]["type"] == "exit_unsold"
        assert alerts[0]["zone"] == "exit" and alerts[0]["name"]
        assert st.outbox("alerts") == alerts
        epcis_topic = f"rfidd/v1/{st.cfg.site.id}/epcis"

        def exit_events(ms: list[Any]) -> list[dict[str, Any]]:
            return [ev for m in ms if m.topic == epcis_topic
                    for ev in json.loads(m.payload)["epcisBody"]["eventList"]
                    if ev.get("bizStep") == "entering_exiting"]

        exits = exit_events(col.wait_for(lambda ms: bool(exit_events(ms)), timeout=15))
        assert {e for ev in exits for e in ev["epcList"]} == {decode(thief).uri}
        assert st.daemon.metrics.registry.get_sample_value(
            "rfidd_alerts_total", {"kind": "exit_unsold"}) == 1.0

        # The shrinkage report values the confirmed loss at retail price.
        res = st.cli("shrinkage", "--json", "--publish")
        report = json.loads(res.output)
        assert report["totals"]["confirmed"] == 1 and report["items"][0]["epc"] == thief
        gtin = decode(thief).gtin14
        price = next(r["price"] for r in st.site.scenario.catalog_rows() if r["gtin"] == gtin)
        assert float(report["totals"]["value"]) == float(price)
        assert st.outbox("reports/shrinkage")[0]["totals"] == report["totals"]
        assert st.outbox("reports/shrinkage")[0]["timezone"] == st.daemon.config.site.timezone
        repl = st.cli("replenishment", "--json")
        lines = json.loads(repl.output)["lines"]
        assert all(ln["floor_qty"] == 0 and ln["stock_qty"] > 0 for ln in lines)


def _pending(st: Store) -> list[Any]:
    from rfidd.store import repo

    assert st.daemon.db is not None
    with st.daemon.db.session() as s:
        return repo.outbox_pending(s, 1000)


def test_malformed_asn_command_gets_an_error_reply_and_the_daemon_carries_on(
    tmp_path: Path, sqlite_url: str, mqtt_broker: Any, mqtt_collector: Any
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    with running_store(tmp_path, sqlite_url, mqtt_broker) as st:
        protocol = "5" if mqtt_broker.supports_v5 else "3.1.1"
        base = f"rfidd/v1/{st.cfg.site.id}"
        col = mqtt_collector(mqtt_broker, f"{base}/errors", protocol=protocol)
        st.wait("HQ link connected", lambda: st.daemon.metrics.registry.get_sample_value(
            "rfidd_mqtt_connected") == 1.0)
        hq = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hq-{uuid.uuid4().hex[:8]}")
        hq.connect(mqtt_broker.host, mqtt_broker.port)
        hq.loop_start()
        try:
            bad = _asn("DESADV-BAD", st.cfg.site.id, ["30396062C3"])
            del bad["shipped_at"]
            hq.publish(f"{base}/cmd/asn", json.dumps(bad), qos=1).wait_for_publish(5)
            hq.publish(f"{base}/cmd/asn", b"{not json", qos=1).wait_for_publish(5)
            msgs = col.wait_count(2, timeout=15)
            errors = [json.loads(m.payload) for m in msgs]
            assert errors[0]["command"] == "asn"
            assert "shipped_at" in errors[0]["error"] and "epcs[0]" in errors[0]["error"]
            assert "not JSON" in errors[1]["error"]

            floor = sorted(i.epc_hex for i in st.site.world.items() if i.zone == "floor")
            good = _asn("DESADV-OK", st.cfg.site.id, floor[:2])
            hq.publish(f"{base}/cmd/asn", json.dumps(good), qos=1).wait_for_publish(5)
            product = {"gtin": "03760001001013", "sku": "AUR-BAG-001-NOI", "name": "Renamed",
                       "size": "", "colour": "noir", "category": "bags", "price": "3500.00",
                       "currency": "EUR"}
            hq.publish(f"{base}/cmd/catalog", json.dumps([product]), qos=1).wait_for_publish(5)
            st.wait("ASN imported by command", lambda: any(
                "DESADV-OK" in r["asn_ids"] for r in st.ops.reception.receptions()))
            st.wait("catalog updated by command",
                    lambda: st.ops.catalog.catalog["03760001001013"].name == "Renamed")
        finally:
            hq.loop_stop()
            hq.disconnect()
        assert st.daemon.ingestor is not None and st.daemon.ingestor.is_alive()
        assert len(col.messages) == 2  # the good commands raised no error
        res = st.cli("reception", "show", "--json")
        assert json.loads(res.output)["report"]["asn_ids"] == ["DESADV-OK"]
