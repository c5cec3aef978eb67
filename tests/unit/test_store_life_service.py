"""The store-life commands, count booking and the alert workflow of the lifecycle service,
against a real SQLite database (no broker, no threads)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select

from inventory.epc import sgtin96_hex
from inventory.epcis import epcis_document
from inventory.presence import PresenceRow, PresenceTracker
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.lifecycle.alerts import AlertNotFound, AlertRejected
from rfidd.lifecycle.service import LifecycleService
from rfidd.metrics import Metrics
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage

DATA = Path(__file__).resolve().parents[1] / "data"
GTIN = "00614141123452"
T0 = 1_717_000_000.0


def E(n: int) -> str:
    return sgtin96_hex(GTIN, n, 7)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def svc(tmp_path: Path) -> LifecycleService:
    cfg = Config.model_validate({
        "site": {"id": "st", "name": "st", "kind": "store",
                 "sgln": "urn:epc:id:sgln:0614141.00002.0", "timezone": "Europe/Paris"},
        "zones": {"stock": {"kind": "stock"}, "floor": {"kind": "floor"},
                  "exit": {"kind": "exit"}},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
    })
    db = open_database(f"sqlite:///{tmp_path / 'st.db'}")
    ctx = ServiceContext(cfg, db, Metrics(), PresenceTracker(300.0, 6.0, 30.0), DomainLock())
    return LifecycleService(ctx, clock=Clock())


def outbox(svc: LifecycleService, stream: str) -> list[dict[str, Any]]:
    with svc.ctx.db.session() as s:
        q = select(OutboxMessage.stream, OutboxMessage.payload).order_by(OutboxMessage.id)
        return [json.loads(p) for st, p in s.execute(q) if st == stream]


def metric(svc: LifecycleService, name: str, **labels: str) -> float:
    return svc.ctx.metrics.registry.get_sample_value(name, labels) or 0.0


def place(svc: LifecycleService, where: dict[str, str], since: float = T0) -> None:
    svc.ctx.tracker.restore(PresenceRow(e, z, since, since) for e, z in where.items())


def take_over(svc: LifecycleService, where: dict[str, str], count_id: str = "cnt-1") -> Any:
    with svc.ctx.tracker_lock, svc.ctx.transaction() as s:
        return svc.counts.book_count(s, count_id, where, adopt=True, at=T0)


def status(svc: LifecycleService, epc: str) -> str | None:
    st = svc.item_state(epc)
    return None if st is None else str(st["status"])


def test_takeover_then_every_step_and_the_count_books(svc: LifecycleService) -> None:
    booked = take_over(svc, {E(1): "stock", E(2): "floor", E(3): "floor"})
    assert sorted(booked.taken_over) == [E(1), E(2), E(3)] and booked.events == 3
    assert [status(svc, e) for e in (E(1), E(2))] == ["in_stock", "on_floor"]
    evs = outbox(svc, "epcis")
    assert {(e["bizStep"], e["disposition"]) for e in evs} == {
        ("cycle_counting", "sellable_not_accessible"), ("cycle_counting", "sellable_accessible")}
    assert svc.handle("loan_out", {"txn": "L-1", "epcs": [E(1)],
                                   "due": "2024-06-10T10:00:00Z"}).rejected == 0
    assert svc.handle("repair_in", {"txn": "O-1", "epcs": [E(2)]}).rejected == 0
    # A second count: E(3) found in the stockroom is booked there; E(4) is not on the books.
    with svc.ctx.tracker_lock, svc.ctx.transaction() as s:
        again = svc.counts.book_count(s, "cnt-2", {E(3): "stock", E(4): "floor"}, adopt=False,
                                      at=T0 + 50)
    assert again.moved == [E(3)] and again.not_on_books == [E(4)]
    assert status(svc, E(3)) == "in_stock" and status(svc, E(4)) is None
    assert metric(svc, "rfidd_lifecycle_noted_total", step="takeover", note="taken_over") == 3


def test_holds_pickups_restock_and_resale(svc: LifecycleService) -> None:
    take_over(svc, {E(1): "floor", E(2): "floor", E(3): "floor"})
    held = svc.handle("hold", {"txn": "H-1", "epcs": [E(1)], "client": "C-77",
                               "staff": "anna", "until": "2030-01-01T00:00:00Z"})
    assert held.rejected == 0 and status(svc, E(1)) == "held"
    assert not svc.may_leave(E(1))
    [h] = svc.held_items(10)  # the floor's holds screen
    assert (h.epc, h.client, h.until) == (E(1), "C-77", 1893456000.0)
    assert svc.handle("hold", {"txn": "H-1", "epcs": [E(1)], "client": "C-77"}).count(
        "duplicate") == 1
    other = svc.handle("loan_out", {"txn": "L-1", "epcs": [E(1)], "due": "2030-01-01T00:00Z"})
    assert other.items[0].reason_code == "held" and "held for client C-77" in str(
        other.items[0].reason)
    assert svc.handle("release", {"txn": "H-1", "epcs": [E(1)]}).rejected == 0
    assert status(svc, E(1)) == "on_floor" and svc.held_items(10) == []

    svc.handle("sale", {"txn": "R-1", "epcs": [E(2)], "collect_later": True})
    assert status(svc, E(2)) == "awaiting_collection" and not svc.may_leave(E(2))
    svc.handle("collect", {"txn": "R-1", "epcs": [E(2)]})
    assert status(svc, E(2)) == "sold" and svc.may_leave(E(2))

    svc.handle("sale", {"txn": "R-2", "epcs": [E(3)]})
    svc.handle("return", {"txn": "RMA-1", "epcs": [E(3)]})
    resale = svc.handle("sale", {"txn": "R-3", "epcs": [E(3)]})
    assert resale.rejected == 0 and resale.items[0].note_code == "resold_unrestocked"
    assert metric(svc, "rfidd_lifecycle_noted_total", step="sell",
                  note="resold_unrestocked") == 1
    svc.handle("return", {"txn": "RMA-2", "epcs": [E(3)]})
    with pytest.raises(ValueError, match="to: Input should be 'stock', 'floor'"):
        svc.handle("restock", {"txn": "I-1", "epcs": [E(3)], "to": "shelf"})
    back = svc.handle("restock", {"txn": "I-1", "epcs": [E(3)], "to": "floor"})
    assert back.rejected == 0 and status(svc, E(3)) == "on_floor"
    assert svc.handle("restock", {"txn": "I-1", "epcs": [E(3)], "to": "floor"}).count(
        "duplicate") == 1
    wrong = svc.handle("restock", {"txn": "I-2", "epcs": [E(3)], "to": "stock"})
    assert wrong.items[0].reason_code == "wrong_status" and "on floor" in str(
        wrong.items[0].reason)
    assert metric(svc, "rfidd_lifecycle_rejections_total", step="restock",
                  reason="wrong_status") == 1
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    doc = epcis_document(outbox(svc, "epcis"), datetime.now(UTC))
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    steps = {e["bizStep"] for e in outbox(svc, "epcis")}
    assert {"holding", "departing", "stocking", "retail_selling", "receiving"} <= steps


def test_returns_the_books_or_readers_contradict(svc: LifecycleService) -> None:
    take_over(svc, {E(1): "stock"})
    place(svc, {E(1): "stock", E(5): "stock", E(6): "floor"}, since=T0)
    res = svc.handle("return", {"txn": "RMA-9", "epcs": [E(1), E(5), E(6)],
                                "at": "2024-05-29T16:26:40Z"})  # T0 - 3 h
    by = {i.epc: i for i in res.items}
    assert by[E(1)].result == "rejected" and "not sold" in str(by[E(1)].reason)
    assert by[E(5)].reason_code == "present_unsold"
    assert "readers see it in the stockroom" in str(by[E(5)].reason)
    assert by[E(6)].result == "accepted" and by[E(6)].note_code == "unverified_return"
    alerts = svc.alerts.list(kind="return_refused")
    assert sorted(a["epc"] for a in alerts) == [E(1), E(5)]
    flags = [a for a in outbox(svc, "alert") if a["type"] == "return_unverified"]
    assert [f["epc"] for f in flags] == [E(6)]


def test_alert_workflow_reinstates_a_false_alarm(svc: LifecycleService) -> None:
    take_over(svc, {E(1): "floor", E(2): "floor"})
    with svc.ctx.tracker_lock, svc.ctx.transaction() as s:
        for n in (1, 2):  # what the exit module does for an unsold item at the door
            svc.alerts.raise_alert(s, f"A{n}", "exit_unsold", E(n), "exit", T0 + n,
                                   home_zone="floor")
        svc.books.commit(s, {}, {}, (), (), ())
    from sqlalchemy import update

    from rfidd.store.models import Item
    with svc.ctx.db.write() as s:  # the exit module marks them stolen
        s.execute(update(Item).where(Item.epc.in_([E(1), E(2)]))
                  .values(disposition="stolen", biz_step="entering_exiting",
                          updated=time.time() + 10))
    assert status(svc, E(1)) == "missing"
    place(svc, {E(1): "floor"})
    with pytest.raises(AlertRejected, match=r"\(open\): who"):
        svc.alerts.acknowledge("A1", "")
    with pytest.raises(AlertNotFound):
        svc.alerts.resolve("nope", "false_alarm", "anna")
    ack = svc.alerts.acknowledge("A1", "anna", "checking")
    assert ack["state"] == "acknowledged"
    done = svc.alerts.resolve("A1", "false_alarm", "anna", "staff took it to the window")
    assert done["books"] == {"reinstated": True, "zone": "floor", "reason": None}
    assert status(svc, E(1)) == "on_floor"
    assert svc.alerts.resolve("A1", "false_alarm", "anna")["duplicate"] is True
    with pytest.raises(AlertRejected, match="already resolved as false_alarm by anna"):
        svc.alerts.resolve("A1", "confirmed_loss", "bob")
    svc.alerts.resolve("A2", "confirmed_loss", "bob")
    assert status(svc, E(2)) == "missing"
    updates = [a for a in outbox(svc, "alert") if a["type"] == "alert_update"]
    assert [(u["alert_id"], u["state"]) for u in updates] == [
        ("A1", "acknowledged"), ("A1", "resolved"), ("A2", "resolved")]
    with svc.ctx.db.session() as s:
        assert svc.alerts.resolutions(s, ["A1", "A2"]) == {"A1": "false_alarm",
                                                             "A2": "confirmed_loss"}
    assert metric(svc, "rfidd_alert_workflow_steps_total", action="resolve",
                  result="rejected") == 1


def test_count_sections_and_sellable(svc: LifecycleService) -> None:
    take_over(svc, {E(1): "floor", E(2): "floor", E(3): "stock", E(4): "stock"})
    svc.handle("hold", {"txn": "H-1", "epcs": [E(1)], "client": "C-1"})
    svc.handle("sale", {"txn": "R-1", "epcs": [E(2)], "collect_later": True})
    svc.handle("loan_out", {"txn": "L-1", "epcs": [E(3)], "due": "2030-01-01T00:00Z"})
    with svc.ctx.db.session() as s:
        aside = svc.counts.set_aside(s)
        sellable, unbooked = svc.counts.shelf_stock(s, [E(i) for i in range(1, 6)])
    assert aside == {E(1): ("held", "floor"), E(2): ("awaiting_collection", "floor"),
                     E(3): ("on_loan", None)}
    assert sellable == {E(4)} and unbooked == {E(5)}


def test_expired_holds_are_alerted_once_and_rejections_name_the_state(
        svc: LifecycleService) -> None:
    take_over(svc, {E(1): "floor", E(2): "floor"})
    svc.handle("hold", {"txn": "H-1", "epcs": [E(1)], "client": "C-1",
                        "until": "2024-06-01T00:00:00Z"})
    assert svc.check_overdue(now=T0 + 3 * 86400) == 1
    assert svc.check_overdue(now=T0 + 4 * 86400) == 0  # same hold, same alert
    (msg,) = [a for a in outbox(svc, "alert") if a["type"] == "hold_expired"]
    assert (msg["epc"], msg["client"]) == (E(1), "C-1")
    res = svc.handle("collect", {"txn": "P-1", "epcs": [E(1), E(2)]}).to_json()
    assert [(i["result"], i.get("state"), i["reason_code"]) for i in res["items"]] == [
        ("rejected", "held", "held"), ("rejected", "on_floor", "wrong_status")]


def test_a_hold_asked_by_another_store_travels_by_transfer(svc: LifecycleService) -> None:
    take_over(svc, {E(1): "stock"})
    # HQ relays another store's request: cmd/hold with for_site.
    out = svc.ctx.command_handlers["hold"]({"txn": "HQ-H-9", "epcs": [E(1)], "client": "C-9",
                                            "for_site": "lyon"})
    assert "1 accepted" in out
    nope = svc.handle("transfer_out", {"txn": "T-1", "to_site": "nice", "epcs": [E(1)]})
    assert nope.items[0].reason_code == "held"
    ok = svc.handle("transfer_out", {"txn": "T-2", "to_site": "lyon", "epcs": [E(1)]})
    assert ok.rejected == 0 and status(svc, E(1)) == "in_transit"
