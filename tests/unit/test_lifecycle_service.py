"""LifecycleService against a real SQLite database (no broker, no threads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from fakes import make_ingestor
from sqlalchemy import select

from inventory.asn import parse_asn_object
from inventory.epc import decode, sgtin96_hex
from inventory.epcis import epcis_document
from inventory.presence import ChangeKind, PresenceChange, PresenceTracker
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.lifecycle import books
from rfidd.lifecycle.service import LifecycleService
from rfidd.lifecycle.trace import trace
from rfidd.metrics import Metrics
from rfidd.store import repo
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage

DATA = Path(__file__).resolve().parents[1] / "data"
GTIN_A = "00614141123452"
GTIN_B = "00614141999996"
T0 = 1_717_000_000.0


def epc(gtin: str, serial: int) -> str:
    return sgtin96_hex(gtin, serial, 7)


def config(site: str, kind: str) -> Config:
    return Config.model_validate({
        "site": {"id": site, "name": site, "kind": kind,
                 "sgln": "urn:epc:id:sgln:0614141.00001.0" if kind == "workshop"
                 else "urn:epc:id:sgln:0614141.00002.0", "timezone": "Europe/Paris"},
        "zones": {"bench": {"kind": "bench"}, "stock": {"kind": "stock"},
                  "floor": {"kind": "floor"}, "reception": {"kind": "reception"}},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
    })


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def make(tmp_path: Path) -> Any:
    def build(site: str, kind: str) -> tuple[LifecycleService, ServiceContext]:
        cfg = config(site, kind)
        db = open_database(f"sqlite:///{tmp_path / (site + '.db')}")
        tracker = PresenceTracker(300.0, 6.0, 30.0)
        ctx = ServiceContext(cfg, db, Metrics(), tracker, DomainLock())
        return LifecycleService(ctx, clock=Clock()), ctx
    return build


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema.Draft7Validator(json.loads((DATA / "EPCIS-JSON-Schema.json").read_text()))


def outbox(ctx: ServiceContext, stream: str | None = None) -> list[dict[str, Any]]:
    with ctx.db.session() as s:
        q = select(OutboxMessage.stream, OutboxMessage.payload).order_by(OutboxMessage.id)
        return [json.loads(p) for st, p in s.execute(q) if stream is None or st == stream]


def rejections(svc: LifecycleService, step: str, reason: str) -> float:
    v = svc.ctx.metrics.registry.get_sample_value(
        "rfidd_lifecycle_rejections_total", {"step": step, "reason": reason})
    return v or 0.0


_INGEST: dict[int, Any] = {}


def feed(svc: LifecycleService, changes: list[PresenceChange]) -> None:
    """Through the ingest's view, plans, commit and apply, as a batch of reads goes."""
    ing = _INGEST.get(id(svc))
    if ing is None:
        ctx = svc.ctx
        ing, _ = make_ingestor(
            ctx.db, {}, {z: str(zc.kind) for z, zc in ctx.config.zones.items()},
            lock=ctx.tracker_lock, metrics=ctx.metrics, tracker=ctx.tracker,
            books=lambda s, epcs: books.load_states(s, epcs, ctx.config.site.id),
            quiet_rules=True)
        ing.add_component(svc)
        _INGEST[id(svc)] = ing
    ing.handle_changes(changes)


def arrive(e: str, zone: str, at: float) -> PresenceChange:
    return PresenceChange(ChangeKind.ARRIVED, e, zone, None, at)


def test_workshop_commissioning_session_and_ship(make: Any, validator: Any) -> None:
    svc, ctx = make("ws", "workshop")
    sess = svc.commissioning.open_session({"gtin": GTIN_A[1:], "expected": 2, "zone": "bench"})
    a1, a2, a3, b1 = epc(GTIN_A, 1), epc(GTIN_A, 2), epc(GTIN_A, 3), epc(GTIN_B, 1)
    changes = [arrive(a1, "bench", T0), arrive(b1, "bench", T0), arrive(a2, "bench", T0 + 1),
               arrive(a3, "bench", T0 + 2)]
    feed(svc, changes)
    epcis = outbox(ctx, "epcis")
    assert [(e["bizStep"], e["action"], e["disposition"]) for e in epcis] == \
        [("commissioning", "ADD", "active")] * 2
    assert {e["epcList"][0] for e in epcis} == {decode(a1).uri, decode(a2).uri}
    alerts = outbox(ctx, "alert")
    assert [(a["epc"], a["reason"]) for a in alerts] == [(b1, "wrong_product")]
    assert rejections(svc, "commission", "wrong_product") == 1
    assert svc.commissioning.session_json(sess["id"])["commissioned"] == 2
    assert svc.commissioning.sessions() == []  # full: closed; a3 arrives with no session open
    assert svc.item_state(a3) is None

    # per-item bind with TID
    svc.commissioning.bind({"epc": decode(a3).uri, "tid": "e2801160200074cf085909ad"})
    feed(svc, [arrive(a3, "bench", T0 + 5)])
    ev = outbox(ctx, "epcis")[-1]
    assert ev["epcList"] == [decode(a3).uri] and ev["rfidd:tid"] == "E2801160200074CF085909AD"

    carton = "urn:epc:id:sscc:0614141.1234567890"
    res = svc.handle("ship", {"txn": "ASN-1", "to_site": "st", "carton": carton,
                              "epcs": [a1, a2, a3]})
    assert res.rejected == 0 and res.asn is not None
    asn = parse_asn_object(outbox(ctx, "asn")[0])
    assert asn.ok and asn.asns[0].epcs == tuple(sorted([a1, a2, a3]))
    assert asn.asns[0].destination == "st" and asn.asns[0].origin == "ws"
    steps = [(e["type"], e.get("bizStep")) for e in outbox(ctx, "epcis")[3:]]
    assert steps == [("AggregationEvent", "packing"), ("ObjectEvent", "shipping")] * 3
    n = len(outbox(ctx))
    again = svc.handle("ship", {"txn": "ASN-1", "to_site": "st", "carton": carton,
                                "epcs": [a1, a2, a3]})
    assert again.count("duplicate") == 3 and len(outbox(ctx)) == n
    doc = epcis_document(outbox(ctx, "epcis"), __import__("datetime").datetime.now(
        __import__("datetime").UTC))
    assert not list(validator.iter_errors(doc))
    hist = trace(ctx.db, a1)
    assert [h.biz_step for h in hist] == ["commissioning", "packing", "shipping"]


def test_shipment_is_all_or_nothing(make: Any) -> None:
    svc, ctx = make("ws", "workshop")
    svc.commissioning.open_session({"gtin": GTIN_A, "expected": 1})
    a1, a2 = epc(GTIN_A, 1), epc(GTIN_A, 2)
    feed(svc, [arrive(a1, "bench", T0)])
    res = svc.handle("ship", {"txn": "ASN-2", "to_site": "st", "epcs": [a1, a2]})
    assert res.rejected == 2 and res.asn is None
    assert outbox(ctx, "asn") == []
    assert [i.reason_code for i in res.items] == ["shipment_incomplete", "unknown_item"]
    assert svc.item_state(a1)["status"] == "commissioned"


def store_with_items(make: Any, epcs: list[str]) -> tuple[LifecycleService, ServiceContext]:
    svc, ctx = make("st", "store")
    svc.handle("shipment", {"asn_id": "ASN-1", "origin": "ws", "destination": "st",
                            "shipped_at": "2024-05-29T10:00:00Z", "epcs": epcs})
    res = svc.handle("transfer_in", {"txn": "ASN-1", "epcs": epcs})
    assert res.count("accepted") == len(epcs), res.to_json()
    return svc, ctx


def test_store_sale_is_idempotent_and_double_sale_rejected(make: Any, validator: Any) -> None:
    a1, a2 = epc(GTIN_A, 1), epc(GTIN_A, 2)
    svc, ctx = store_with_items(make, [a1, a2])
    sale = {"txn": "R-17", "epcs": [a1]}
    first = svc.handle("sale", sale)
    assert first.count("accepted") == 1
    n = len(outbox(ctx))
    again = svc.handle("sale", sale)
    assert again.count("duplicate") == 1 and again.items[0].event_ids == first.items[0].event_ids
    assert len(outbox(ctx)) == n
    other = svc.handle("sale", {"txn": "R-18", "epcs": [a1]})
    assert other.rejected == 1 and other.items[0].reason_code == "already_done"
    assert "already sold in transaction R-17" in (other.items[0].reason or "")
    assert rejections(svc, "sell", "already_done") == 1
    alert = outbox(ctx, "alert")[-1]
    assert alert["type"] == "lifecycle_rejected" and alert["txn"] == "R-18"
    sold = [e for e in outbox(ctx, "epcis") if e.get("bizStep") == "retail_selling"]
    assert len(sold) == 1 and sold[0]["disposition"] == "retail_sold"
    assert sold[0]["bizTransactionList"][0]["type"] == "inv"
    ret = svc.handle("return", {"txn": "RMA-1", "epcs": [a1]})
    assert ret.count("accepted") == 1
    assert outbox(ctx, "epcis")[-1]["bizTransactionList"][0]["type"] == "rma"
    for e in outbox(ctx, "epcis"):
        errs = list(validator.iter_errors(epcis_document([e], __import__(
            "datetime").datetime.now(__import__("datetime").UTC))))
        assert not errs, errs[0].message


def test_receiving_item_never_shipped_here_is_rejected(make: Any) -> None:
    svc, _ctx = make("st", "store")
    res = svc.handle("transfer_in", {"txn": "ASN-9", "epcs": [epc(GTIN_A, 5)]})
    assert res.rejected == 1 and res.items[0].reason_code == "not_shipped_here"
    assert rejections(svc, "transfer_in", "not_shipped_here") == 1
    svc.handle("shipment", {"asn_id": "ASN-3", "origin": "ws", "destination": "st",
                            "shipped_at": "2024-05-29T10:00:00Z", "epcs": [epc(GTIN_A, 6)]})
    with pytest.raises(ValueError, match="destination"):
        svc.handle("shipment", {"asn_id": "ASN-4", "origin": "ws", "destination": "elsewhere",
                                "shipped_at": "2024-05-29T10:00:00Z", "epcs": [epc(GTIN_A, 7)]})


def test_loan_overdue_alert_once(make: Any) -> None:
    a1 = epc(GTIN_A, 1)
    svc, ctx = store_with_items(make, [a1])
    svc.handle("loan_out", {"txn": "L-1", "epcs": [a1], "due": "2024-06-01T00:00:00Z"})
    due = 1_717_200_000.0
    assert svc.check_overdue(due - 10) == 0
    assert svc.check_overdue(due + 86400) == 1
    assert svc.check_overdue(due + 2 * 86400) == 0
    alert = outbox(ctx, "alert")[-1]
    assert alert["type"] == "loan_overdue" and alert["epc"] == a1
    assert svc.handle("loan_back", {"txn": "L-1", "epcs": [a1]}).count("accepted") == 1
    assert svc.item_state(a1)["status"] == "in_stock"  # type: ignore[index]


def test_repair_of_a_sold_item_shows_in_history(make: Any) -> None:
    a1 = epc(GTIN_A, 1)
    svc, ctx = store_with_items(make, [a1])
    svc.handle("sale", {"txn": "R-1", "epcs": [a1]})
    svc.handle("repair_in", {"txn": "REP-1", "epcs": [a1]})
    svc.handle("repair_out", {"txn": "REP-1", "epcs": [a1]})
    assert svc.item_state(a1)["status"] == "sold"  # type: ignore[index]
    assert [(h.biz_step, h.disposition) for h in trace(ctx.db, a1)][-2:] == [
        ("repairing", "needs_replacement"), ("repairing", "available")]


def test_state_adopted_from_items_disposition(make: Any) -> None:
    """Another service (reception) wrote items.disposition: the sale follows it."""
    svc, ctx = make("st", "store")
    a1 = epc(GTIN_A, 1)
    with ctx.transaction() as s:
        ctx.stage(s, items=[repo.ItemUpsert(a1, biz_step="receiving",
                                            disposition="sellable_not_accessible")])
    assert svc.handle("sale", {"txn": "R-5", "epcs": [a1]}).count("accepted") == 1


def test_stock_floor_moves_follow_state(make: Any) -> None:
    a1 = epc(GTIN_A, 1)
    svc, ctx = store_with_items(make, [a1])
    feed(svc, [PresenceChange(ChangeKind.MOVED, a1, "floor", "stock", T0 + 50)])
    assert svc.item_state(a1)["status"] == "on_floor"  # type: ignore[index]
    svc.handle("sale", {"txn": "R-1", "epcs": [a1]})
    feed(svc, [PresenceChange(ChangeKind.MOVED, a1, "stock", "floor", T0 + 90)])
    assert svc.item_state(a1)["status"] == "sold"  # type: ignore[index]
    # A customer carrying a purchase across the store: a move, not an exception.
    assert outbox(ctx, "alert") == []
    assert not svc.in_stock(a1)


@pytest.mark.parametrize("name,data,fragment", [
    ("sale", {"txn": "R-1", "epcs": ["30"], "extra": 1}, "extra: unknown field"),
    ("sale", {"txn": "R-1", "epcs": ["XYZ"]}, "epcs"),
    ("sale", {"txn": "", "epcs": [epc(GTIN_A, 1)]}, "txn"),
    ("sale", {"epcs": [epc(GTIN_A, 1)]}, "txn: Field required"),
    ("sale", [1, 2], "must be a JSON object"),
    ("sale", {"txn": "R", "epcs": [epc(GTIN_A, 1), epc(GTIN_A, 1)]}, "repeats"),
    ("loan_out", {"txn": "L", "epcs": [epc(GTIN_A, 1)], "due": "2024-06-01T00:00:00"}, "due"),
    ("ship", {"txn": "A", "epcs": [epc(GTIN_A, 1)], "to_site": "x/y"}, "to_site"),
    ("teleport", {}, "unknown lifecycle command"),
])
def test_malformed_commands_are_rejected_naming_the_field(
        make: Any, name: str, data: Any, fragment: str) -> None:
    svc, ctx = make("st", "store")
    with pytest.raises(ValueError, match=fragment):
        svc.handle(name, data)
    assert outbox(ctx) == []


def test_received_straight_to_the_floor_then_back(make: Any) -> None:
    """Reception -> floor is stocking; floor -> stockroom storing; reception -> stockroom is
    no step at all (the books already say in stock), and none of it is an exception."""
    a1, a2 = epc(GTIN_A, 1), epc(GTIN_A, 2)
    svc, ctx = store_with_items(make, [a1, a2])
    feed(svc, [PresenceChange(ChangeKind.MOVED, a1, "floor", "reception", T0 + 10),
               PresenceChange(ChangeKind.MOVED, a2, "stock", "reception", T0 + 10)])
    feed(svc, [PresenceChange(ChangeKind.MOVED, a1, "stock", "floor", T0 + 20)])
    steps = [(e["bizStep"], e["epcList"][0]) for e in outbox(ctx, "epcis")
             if e["bizStep"] in ("stocking", "storing")]
    assert steps == [("stocking", decode(a1).uri), ("storing", decode(a1).uri)]
    assert outbox(ctx, "alert") == []
    assert svc.item_state(a2)["status"] == "in_stock"  # type: ignore[index]
    assert not svc.has_no_record(a1) and svc.has_no_record(epc(GTIN_A, 99))
