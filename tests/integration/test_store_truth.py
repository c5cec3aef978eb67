"""Store truth, tried as a new user would: a simulated boutique (simulator/scenarios/
store-go-live.toml: real LLRP readers simulated on sockets, sllurp, the daemon with every
service) goes live with stock rfidd never received, then lives an ordinary day through the
`rfidd` CLI. Every alert, count, shrinkage and replenishment figure must name exactly the
exceptions planted here:

  takeover   all 22 pieces adopted at their zone (12 stockroom, 10 floor)
  loan       B_f1 lent to the press, leaves: no alert
  holds      D_f1, D_f2 held for clients; D_f1 leaves unsold: alert (suspected, open)
  pick-up    C_f sold for later collection: stays, out of sellable stock
  sales      D_s1 sold and gone; E1 sold, returned, sold again before restock (noted), gone;
             E2 sold, returned, restocked to the floor
  fraud      a return of A_s1, unsold in the stockroom: refused, alerted
  walk-outs  A_f1 leaves: confirmed loss; A_f2 leaves and is brought back: false alarm
  vanished   B_s1 removed without passing the door: missing at the count
  found      F, a piece never received, appears on the floor: unexpected, not on the books
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from waits import wait_until

from inventory.epc import decode
from inventory.epcis import epcis_document
from rfidd.app import Daemon, Timings
from rfidd.demo import demo_config
from rfidd.lifecycle.alerts_cli import alerts_cli
from rfidd.lifecycle.cli import lifecycle_cli
from rfidd.ops import OpsSettings, ops_cli
from rfidd.store.models import Event, OutboxMessage, ZonePresence
from simulator import Scenario, SimulatedSite
from simulator.scenario import action

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "simulator" / "scenarios" / "store-go-live.toml"
CATALOG = ROOT / "simulator" / "scenarios" / "maison-catalog.csv"
SCHEMA = ROOT / "tests" / "data" / "EPCIS-JSON-Schema.json"
GTIN = {"A": "03760001001167", "B": "03760001001013", "C": "03760001001068",
        "D": "03760001001105", "E": "03760001001181"}
SKU = {"C": "AUR-SHO-010-37", "D": "AUR-SHO-011-38"}


@dataclass
class Store:
    site: SimulatedSite
    daemon: Daemon
    api: str

    def run(self, group: Any, *args: str, code: int = 0) -> Result:
        res = CliRunner().invoke(group, ["--api", self.api, *args])
        assert res.exit_code == code, (args, res.output, res.exception)
        return res

    def ops(self, *args: str) -> Any:
        return json.loads(self.run(ops_cli, *args, "--json").output)

    def life(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run(lifecycle_cli, *args, "--json", code=code).output)

    def located(self) -> dict[str, str]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            return {e: z for e, z in s.execute(select(ZonePresence.epc, ZonePresence.zone))}

    def wait_at(self, zone: str, *epcs: str) -> None:
        wait_until(lambda: all(self.located().get(e) == zone for e in epcs),
                   f"{', '.join(epcs)} located in {zone}", timeout=30)

    def outbox(self, topic: str) -> list[dict[str, Any]]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            rows = s.scalars(select(OutboxMessage.payload).where(OutboxMessage.topic == topic)
                             .order_by(OutboxMessage.id))
            return [json.loads(p) for p in rows]

    def epcis(self, biz_step: str) -> list[dict[str, Any]]:
        assert self.daemon.db is not None
        with self.daemon.db.session() as s:
            return [json.loads(p) for p in s.scalars(
                select(Event.payload).where(Event.biz_step == biz_step).order_by(Event.id))]

    def count(self, *zones: str, present: set[str], adopt: bool = False) -> dict[str, Any]:
        """A count over `zones` that stops once every present item was read during it."""
        res = self.run(ops_cli, "count", "start", *zones, *(["--adopt"] if adopt else []))
        cid = res.output.split()[1]
        assert self.daemon.ops is not None and self.daemon.ctx is not None
        mark = self.daemon.ops.counting.start_mark(cid)
        tracker = self.daemon.ctx.tracker
        wait_until(lambda: present <= {r.epc for r in tracker.touched_since(mark)},
                   "every present item read during the count", timeout=40)
        doc: dict[str, Any] = self.ops("count", "stop", cid)
        return doc

    def metric(self, name: str, **labels: str) -> float:
        return self.daemon.metrics.registry.get_sample_value(name, labels) or 0.0


@contextmanager
def boutique(tmp_path: Path, db_url: str) -> Iterator[Store]:
    scenario = Scenario.load(SCENARIO)
    with SimulatedSite(scenario, run_timeline=False) as site:
        base = demo_config(scenario, site.ports, db_url, None)
        site_id = f"truth-{uuid.uuid4().hex[:8]}"
        cfg = base.model_copy(update={
            "site": base.site.model_copy(update={"id": site_id}),
            "http": base.http.model_copy(update={"enabled": True, "port": 0}),
            "presence": base.presence.model_copy(update={"departure_s": 30.0}),
        })
        daemon = Daemon(cfg, timings=Timings(supervisor_s=0.2, sweep_s=0.5, outbox_stats_s=0.5),
                        ops_settings=OpsSettings(tick_s=0.2), with_lifecycle=True)
        daemon.start()
        try:
            assert daemon.api is not None
            store = Store(site, daemon, f"http://127.0.0.1:{daemon.api.port}")
            store.run(ops_cli, "catalog", "import", str(CATALOG))
            initial = {i.epc_hex: i.zone for i in scenario.items()}
            wait_until(lambda: store.located() == initial, "every piece located", timeout=40)
            yield store
        finally:
            daemon.stop()


def test_a_store_day_after_go_live_names_exactly_the_planted_exceptions(
        tmp_path: Path, sqlite_url: str) -> None:
    with boutique(tmp_path, sqlite_url) as st:
        items = st.site.world.items()
        by: dict[str, list[str]] = {}
        for i in sorted(items, key=lambda i: (i.gtin, i.serial)):
            kind = next(k for k, g in GTIN.items() if g == i.gtin)
            by.setdefault(kind + ("_s" if i.zone == "stockroom" else "_f"), []).append(i.epc_hex)
        a_s, a_f, b_s, b_f = by["A_s"], by["A_f"], by["B_s"], by["B_f"]
        c_s, (c_f,), d_s, d_f, e = by["C_s"], by["C_f"], by["D_s"], by["D_f"], by["E_f"]
        stock = a_s + b_s + c_s + d_s
        everything = {i.epc_hex for i in items}
        day0 = datetime.now(UTC) - timedelta(minutes=1)

        # -- go-live: the take-over count adopts what it finds -------------------------------
        doc = st.count("stockroom", "floor", present=everything, adopt=True)
        assert sorted(doc["books"]["taken_over"]) == sorted(everything)
        assert doc["totals"]["unexpected"] == 22 and doc["books"]["not_on_books"] == []
        # It measured nothing: no accuracy figure (0 % against the empty books would be false)
        assert doc["accuracy"]["record"] is None and doc["accuracy"]["item"] is None
        adopted = st.epcis("cycle_counting")
        assert len(adopted) == 22 and all(ev["epcList"] == [ev["epcList"][0]] for ev in adopted)
        disp = {ev["epcList"][0]: ev["disposition"] for ev in adopted}
        assert disp == {decode(x).uri: "sellable_not_accessible" if x in stock
                        else "sellable_accessible" for x in everything}

        # -- the day ---------------------------------------------------------------------------
        due = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        assert st.life("loan", "--id", "PRESS-1", "--due", due, b_f[0])["accepted"] == 1
        assert st.life("hold", "--txn", "H-1", "--client", "CL-12", "--staff", "anna",
                       *d_f)["accepted"] == 2
        assert st.life("sell", "--txn", "R-C", "--collect-later", c_f)["accepted"] == 1
        for txn, x in (("R-D", d_s[0]), ("R-1", e[0]), ("R-3", e[1])):
            assert st.life("sell", "--txn", txn, x)["accepted"] == 1
        # Leaving: the loan and the sales pass; the walk-outs do not.
        st.site.apply(action(t=0, action="exit", epcs=[b_f[0], d_s[0], e[0], e[1], a_f[0],
                                                        a_f[1], d_f[0]], zone="exit"))
        st.wait_at("exit", b_f[0], d_s[0], e[0], e[1], a_f[0], a_f[1], d_f[0])
        st.site.apply(action(t=0, action="remove", epcs=[b_f[0], d_s[0], a_f[0], d_f[0]]))
        # Customers bring E1 and E2 back; staff bring back A_f2 (a false alarm).
        st.site.apply(action(t=0, action="move", epcs=[e[0], e[1], a_f[1]], to="floor"))
        st.wait_at("floor", e[0], e[1], a_f[1])
        assert st.life("return", "--rma", "RMA-1", e[0])["accepted"] == 1
        resale = st.life("sell", "--txn", "R-2", e[0])
        assert resale["items"][0]["note_code"] == "resold_unrestocked"
        assert st.life("return", "--rma", "RMA-2", e[1])["accepted"] == 1
        assert st.life("restock", "--txn", "INSP-2", "--to", "floor", e[1])["accepted"] == 1
        fraud = st.life("return", "--rma", "RMA-9", a_s[0], code=1)
        assert fraud["items"][0]["reason_code"] == "present_unsold"
        st.site.apply(action(t=0, action="exit", epcs=[e[0]], zone="exit"))
        st.site.apply(action(t=0, action="remove", epcs=[b_s[0]]))  # vanished, no door
        (found,) = st.site.apply(action(t=0, action="shipment", zone="floor", count=1,
                                        categories=["bags"]))
        st.wait_at("floor", found.epc_hex)

        # -- alerts: exactly the three walk-outs and the refused return -----------------------
        alerts = {a["epc"]: a for a in json.loads(
            st.run(alerts_cli, "list", "--json").output)["alerts"]}
        assert {(x, a["type"]) for x, a in alerts.items()} == {
            (a_f[0], "exit_unsold"), (a_f[1], "exit_unsold"), (d_f[0], "exit_unsold"),
            (a_s[0], "return_refused")}
        assert {alerts[x]["home_zone"] for x in (a_f[0], a_f[1], d_f[0])} == {"floor"}
        st.run(alerts_cli, "ack", alerts[a_f[0]]["alert_id"], "--by", "anna")
        st.run(alerts_cli, "resolve", alerts[a_f[0]]["alert_id"], "confirmed_loss", "--by",
               "anna", "--note", "seen on camera")
        back = json.loads(st.run(alerts_cli, "resolve", alerts[a_f[1]]["alert_id"],
                                 "false_alarm", "--by", "anna", "--json").output)
        assert back["books"]["reinstated"] is True and back["books"]["zone"] == "floor"
        st.run(alerts_cli, "resolve", alerts[a_f[1]]["alert_id"], "recovered", "--by", "bob",
               code=1)  # already resolved: refused, changes nothing
        hq = [m for m in st.outbox("alerts") if m["type"] == "alert_update"]
        assert [(m["epc"], m["state"]) for m in hq] == [
            (a_f[0], "acknowledged"), (a_f[0], "resolved"), (a_f[1], "resolved")]
        assert st.metric("rfidd_alerts_total", kind="exit_unsold") == 3
        assert st.metric("rfidd_lifecycle_noted_total", step="sell",
                         note="resold_unrestocked") == 1

        # -- replenishment: sellable stock only ------------------------------------------------
        lines = st.ops("replenishment")["lines"]
        assert [(ln["sku"], ln["stock_qty"], ln["floor_qty"], ln["suggested"]) for ln in lines
                ] == [(SKU["C"], 2, 0, 1), (SKU["D"], 2, 0, 1)]

        # -- the count: books, sections, exceptions --------------------------------------------
        present = (set(stock) - {b_s[0], d_s[0]}) | {a_f[1], b_f[1], c_f, d_f[1], e[1], e[2],
                                                      found.epc_hex}
        assert st.daemon.ctx is not None
        tracker = st.daemon.ctx.tracker

        def gone(x: str, peer: str) -> bool:  # the readers go on reading its neighbour
            r, p = tracker.get(x), tracker.get(peer)
            return r is None or (p is not None and p.last_seen > r.last_seen + 1.0)

        wait_until(lambda: gone(b_s[0], b_s[1]), "no more reads of the vanished bag",
                   timeout=20)
        n_events = len(st.epcis("cycle_counting"))
        doc = st.count("stockroom", "floor", present=present)
        assert doc["totals"] == {"expected": 15, "found": 14, "missing": 1, "misplaced": 0,
                                 "unexpected": 1, "unidentified": 0}
        assert [(m["epc"], m["booked_zone"]) for m in doc["missing"]] == [(b_s[0], "stockroom")]
        assert [(u["epc"], u["zone"]) for u in doc["unexpected"]] == [(found.epc_hex, "floor")]
        assert doc["books"]["not_on_books"] == [found.epc_hex]
        assert doc["books"]["taken_over"] == [] and doc["books"]["moved"] == []
        assert {k: ([f["epc"] for f in v["found"]], v["not_seen"])
                for k, v in doc["sections"].items()} == {
            "held": ([d_f[1]], []), "awaiting_collection": ([c_f], [])}
        assert len(st.epcis("cycle_counting")) - n_events == len(present)

        # -- shrinkage ---------------------------------------------------------------------------
        report = st.ops("shrinkage", "--since", day0.isoformat())
        tot = report["totals"]
        assert [(i["epc"], i["status"], i["zone"]) for i in report["items"]] == sorted(
            [(a_f[0], "confirmed", "floor"), (d_f[0], "suspected", "floor")])
        assert (tot["confirmed_value"], tot["suspected_value"]) == ("450.00", "650.00")
        assert (tot["sales_value"], tot["returns_value"], tot["net_sales_value"]) == (
            "2170.00", "420.00", "1750.00")
        assert tot["shrinkage_rate"] == pytest.approx(1100 / 1750)
        assert tot["confirmed_rate"] == pytest.approx(450 / 1750)
        assert report["cleared_alerts"] == [alerts[a_f[1]]["alert_id"]]
        assert set(report["by_zone"]) == {"floor"} and "definitions" in report

        # -- the new steps' EPCIS validates against the GS1 schema ------------------------------
        assert st.daemon.db is not None
        with st.daemon.db.session() as s:
            events = [json.loads(p) for p in s.scalars(select(Event.payload))]
        validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
        assert not list(validator.iter_errors(epcis_document(events, datetime.now(UTC))))
        steps = {(ev.get("bizStep"), ev.get("disposition")) for ev in events}
        assert {("holding", "reserved"), ("retail_selling", "retail_sold"),
                ("receiving", "returned"), ("stocking", "sellable_accessible"),
                ("cycle_counting", "sellable_accessible")} <= steps
