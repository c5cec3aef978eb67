"""StoreOps without sockets: an in-memory SQLite database, a presence tracker fed by hand, the
change hook called as the ingest thread calls it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from inventory.epc import decode, sgtin96_hex
from inventory.presence import ChangeKind, PresenceChange, PresenceTracker, ZoneRead
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.metrics import Metrics
from rfidd.ops import OpsError, OpsSettings, StoreOps
from rfidd.ops.api import parse_time
from rfidd.ops.store import gtin_of_uri
from rfidd.store import repo
from rfidd.store.db import open_database
from rfidd.store.models import Event, Item, OutboxMessage
from rfidd.web.errors import ApiError

BAG, SCARF = "03760001001013", "03760001001020"
CATALOG_CSV = (
    "gtin,sku,name,size,colour,category,price,currency\n"
    f"{BAG},BAG-1,Sac Céleste,,noir,bags,3400.00,EUR\n"
    f"{SCARF},BAG-2,Sac Céleste,,caramel,bags,3400.00,EUR\n"
)
SITE = "unit-store"


def epc(gtin: str, serial: int) -> str:
    return sgtin96_hex(gtin, serial, 7)


@pytest.fixture
def ctx() -> Iterator[ServiceContext]:
    cfg = Config.model_validate({
        "site": {"id": SITE, "name": "Unit", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": "sqlite://"},
        "mqtt": {"enabled": False},
        "http": {"enabled": False},
        "shrinkage": {"exit_alert_debounce_s": 60.0, "counts_before_suspected": 2},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"},
                  "reception": {"kind": "reception"}, "exit": {"kind": "exit"}},
    })
    db = open_database(cfg.database.url)
    tracker = PresenceTracker(departure_s=300, move_margin_db=0, move_margin_decay_s=1)
    c = ServiceContext(cfg, db, Metrics(), tracker, threading.RLock())
    try:
        yield c
    finally:
        db.dispose()


@pytest.fixture
def ops(ctx: ServiceContext) -> StoreOps:
    o = StoreOps(ctx, OpsSettings(loss_min_confidence=0.5))
    o.start()
    res = o.import_catalog_text(CATALOG_CSV, "csv", "catalog.csv")
    assert res["imported"] == 2 and not res["errors"]
    return o


def hook(ctx: ServiceContext, *changes: PresenceChange) -> None:
    """Call the hooks as the ingest thread does: inside a write transaction."""
    with ctx.transaction() as s:
        for h in ctx.change_hooks:
            h(s, list(changes), {})


def arrive(e: str, zone: str, at: float = 1000.0) -> PresenceChange:
    return PresenceChange(ChangeKind.ARRIVED, e, zone, None, at)


def outbox(ctx: ServiceContext, topic: str) -> list[dict[str, Any]]:
    with ctx.db.session() as s:
        return [json.loads(p) for p in s.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.topic == topic)
            .order_by(OutboxMessage.id))]


def asn(asn_id: str, epcs: list[str], dest: str = SITE) -> dict[str, Any]:
    return {"asn_id": asn_id, "origin": "WH", "destination": dest,
            "shipped_at": "2024-05-02T08:00:00Z", "epcs": epcs, "lines": []}


def test_registers_hook_and_commands(ctx: ServiceContext, ops: StoreOps) -> None:
    assert set(ctx.command_handlers) == {"asn", "catalog"}
    assert len(ctx.change_hooks) == 1


def test_asn_command_idempotent_conflict_and_field_errors(ctx: ServiceContext,
                                                          ops: StoreOps) -> None:
    doc = asn("A-1", [epc(BAG, 1), epc(BAG, 2)])
    assert "new ['A-1']" in ctx.command_handlers["asn"](doc)
    assert "identical ['A-1']" in ctx.command_handlers["asn"](doc)
    assert len(ops.receptions()) == 1  # the re-import opened nothing
    with pytest.raises(ValueError, match="A-1: already imported with other content"):
        ctx.command_handlers["asn"]({**doc, "epcs": doc["epcs"][:1]})
    bad = {**asn("A-2", ["XYZ"]), "shipped_at": "yesterday"}
    with pytest.raises(ValueError) as exc:
        ctx.command_handlers["asn"](bad)
    assert "'shipped_at'" in str(exc.value) and "'epcs[0]'" in str(exc.value)
    with pytest.raises(ValueError, match="must be a JSON object"):
        ctx.command_handlers["asn"](42)


def test_catalog_command_imports_good_rows_and_names_bad_fields(ctx: ServiceContext,
                                                                 ops: StoreOps) -> None:
    good = {"gtin": "03760001001037", "sku": "C-1", "name": "Cabas", "price": "10",
            "currency": "EUR"}
    bad = {**good, "gtin": "03760001001044", "price": "ten"}
    with pytest.raises(ValueError, match=r"record 1\] field 'price'"):
        ctx.command_handlers["catalog"]({"products": [good, bad]})
    assert ops.catalog["03760001001037"].name == "Cabas"
    assert "03760001001044" not in ops.catalog
    with pytest.raises(ValueError, match="products"):
        ctx.command_handlers["catalog"]("nope")


def test_reception_fed_by_hook_and_present_items_reports_discrepancies(
    ctx: ServiceContext, ops: StoreOps
) -> None:
    listed = [epc(BAG, i) for i in range(1, 6)]
    early, extra = listed[0], epc(SCARF, 99)
    with ctx.tracker_lock:  # already standing at reception before the ASN arrives
        ctx.tracker.observe([ZoneRead(early, "reception", -50.0, 999.0)])
    res = ops.import_asn_text(json.dumps(asn("A-9", listed)), "json", "a.json")
    sid = res["reception"]
    assert ops.reception(sid)["progress"]["read"] == 1
    hook(ctx, *(arrive(e, "reception") for e in listed[1:4]), arrive(extra, "reception"),
         arrive(listed[4], "floor"))
    doc = ops.close_reception()
    assert [m["epc"] for m in doc["missing"]] == [listed[4]]
    assert [u["epc"] for u in doc["unexpected"]] == [extra]
    assert {r["epc"] for r in doc["received"]} == set(listed[:4])
    assert {ln["gtin"]: (ln["expected"], ln["received"], ln["name"]) for ln in doc["lines"]} == {
        BAG: (5, 4, "Sac Céleste"), SCARF: (0, 1, "Sac Céleste")}
    assert outbox(ctx, "reports/reception") == [doc]
    with ctx.db.session() as s:
        evs = [json.loads(p) for p in s.scalars(select(Event.payload)
                                                 .where(Event.biz_step == "receiving"))]
    assert {e["epcList"][0] for e in evs} == {decode(x).uri for x in listed[:4]}
    assert len(evs) == 4
    assert all(e["bizTransactionList"][0]["type"] == "desadv" for e in evs)
    with pytest.raises(OpsError) as exc:
        ops.close_reception()
    assert exc.value.status == 409
    with pytest.raises(OpsError, match="already received"):
        ops.open_reception(["A-9"])
    # Reads after close feed nothing and break nothing.
    hook(ctx, arrive(epc(BAG, 50), "reception"))


def test_second_asn_joins_the_open_reception(ctx: ServiceContext, ops: StoreOps) -> None:
    a, b = epc(BAG, 1), epc(BAG, 2)
    r1 = ops.import_asn_text(json.dumps(asn("J-1", [a])), "json", "j1")["reception"]
    hook(ctx, arrive(b, "reception"))
    r2 = ops.import_asn_text(json.dumps(asn("J-2", [b])), "json", "j2")["reception"]
    assert r1 == r2
    doc = ops.close_reception(r1)
    assert doc["asn_ids"] == ["J-1", "J-2"] and doc["missing"] == [
        {"epc": a, "gtin": BAG, "asn_id": "J-1"}]
    other = ops.import_asn_text(json.dumps(asn("J-3", [a], dest="elsewhere")), "json", "j3")
    assert "reception" not in other and "not this site" in other["warnings"][0]


def test_exit_alert_once_per_item_sold_items_silent(ctx: ServiceContext, ops: StoreOps) -> None:
    thief, sold = epc(BAG, 7), epc(BAG, 8)
    with ctx.db.write() as s:
        repo.upsert_items(s, [repo.ItemUpsert(thief, 900.0, "floor"),
                              repo.ItemUpsert(sold, 900.0, "floor", disposition="retail_sold")],
                          900.0)
    hook(ctx, arrive(thief, "exit", 1000.0), arrive(sold, "exit", 1000.0))
    hook(ctx, PresenceChange(ChangeKind.MOVED, thief, "exit", "floor", 1010.0))  # debounced
    alerts = outbox(ctx, "alerts")
    assert [(a["epc"], a["type"], a["name"]) for a in alerts] == [
        (thief, "exit_unsold", "Sac Céleste")]
    with ctx.db.session() as s:
        ev = s.scalars(select(Event).where(Event.biz_step == "entering_exiting")).one()
        assert ev.disposition == "stolen" and json.loads(ev.payload)["epcList"] == [
            decode(thief).uri]
        assert s.get(Item, thief).disposition == "stolen"  # type: ignore[union-attr]
    hook(ctx, arrive(thief, "exit", 1100.0))  # outside the 60 s window: a new alert
    assert len(outbox(ctx, "alerts")) == 2
    report = ops.shrinkage(0, 2000)
    assert report.totals()["confirmed"] == 1 and str(report.lost_value) == "3400.00"


def test_hook_errors_never_reach_the_ingest_thread(ctx: ServiceContext, ops: StoreOps,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_s: Any, _reads: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(ops, "_on_exit", boom)
    with pytest.raises(RuntimeError):  # the ingest catches it and rolls back the savepoint
        hook(ctx, arrive(epc(BAG, 1), "exit"))
    assert ops.hook_errors == 1


def _book(ctx: ServiceContext, items: dict[str, str]) -> None:
    with ctx.db.write() as s:
        repo.upsert_items(s, [repo.ItemUpsert(e, 500.0, z, gtin=decode(e).gtin14)
                              for e, z in items.items()], 500.0)


def test_count_from_tracker_names_exceptions_and_feeds_loss_tracker(
    ctx: ServiceContext, ops: StoreOps
) -> None:
    stock = [epc(BAG, i) for i in range(10)]
    floor = [epc(SCARF, i) for i in range(5)]
    _book(ctx, {**dict.fromkeys(stock, "stockroom"), **dict.fromkeys(floor, "floor")})
    stray = epc(SCARF, 77)

    def read(t: float, pairs: list[tuple[str, str]]) -> None:
        with ctx.tracker_lock:
            ctx.tracker.observe([ZoneRead(e, z, -60.0, t) for e, z in pairs])

    read(999.0, [(e, "stockroom") for e in stock])  # before the count: does not count
    started = ops.start_count(["stockroom", "floor"])
    cid = started["session_id"]
    assert started["progress"]["expected"] == 15
    read(1000.0, [(e, "stockroom") for e in stock[2:8]] + [(e, "floor") for e in floor]
         + [(stock[8], "floor"), (stray, "floor")])
    live = ops.count(cid)["progress"]
    assert live["found"] == 11 and live["zones"]["floor"] == {"expected": 5, "found": 5}
    doc = ops.stop_count()
    assert {m["epc"] for m in doc["missing"]} == {stock[0], stock[1], stock[9]}
    assert [(m["epc"], m["found_zone"]) for m in doc["misplaced"]] == [(stock[8], "floor")]
    assert [(u["epc"], u["zone"]) for u in doc["unexpected"]] == [(stray, "floor")]
    assert outbox(ctx, "reports/count") == [doc]
    assert "missing," in ops.count_csv(cid)
    assert ops.count(cid)["status"] == "finished"
    # Missed twice (k=2) in a zone whose measured read rate is high: suspected lost.
    ops.start_count(["stockroom"])
    read(2000.0, [(e, "stockroom") for e in stock[1:9]])
    second = ops.stop_count()
    assert {s["epc"] for s in second["shrinkage"]["newly_suspected"]} == {stock[0], stock[9]}
    assert {x["epc"] for x in ops.suspected()["suspected"]} == {stock[0], stock[9]}
    report = ops.shrinkage(0, time.time() + 10)
    assert {i.epc for i in report.items if i.status == "suspected"} == {stock[0], stock[9]}
    hook(ctx, arrive(stock[0], "stockroom"))  # seen again: reinstated
    assert {x["epc"] for x in ops.suspected()["suspected"]} == {stock[9]}


def test_count_validation_and_overlap(ctx: ServiceContext, ops: StoreOps) -> None:
    with pytest.raises(OpsError, match="unknown zone"):
        ops.start_count(["attic"])
    with pytest.raises(OpsError, match="zones"):
        ops.start_count([])
    ops.start_count(["floor"], duration_s=0.01)
    with pytest.raises(OpsError) as exc:
        ops.start_count(["floor", "stockroom"])
    assert exc.value.status == 409
    time.sleep(0.02)
    ops.tick()  # timed stop
    assert ops.running_counts() == []
    with pytest.raises(OpsError, match="cron"):
        ops.add_schedule("every monday", ["floor"])
    sched = ops.add_schedule("0 7 * * 1", ["floor"], 60)
    assert ops.schedules()[0]["id"] == sched["id"]
    ops.delete_schedule(sched["id"])
    assert ops.schedules() == []


def test_replenishment_from_presence(ctx: ServiceContext, ops: StoreOps) -> None:
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(epc(BAG, 1), "stockroom", -60.0, 1.0),
                             ZoneRead(epc(SCARF, 1), "stockroom", -60.0, 1.0),
                             ZoneRead(epc(SCARF, 2), "floor", -60.0, 1.0)])
    lines = ops.replenishment()
    assert [(ln.sku, ln.stock_qty, ln.floor_qty) for ln in lines] == [("BAG-1", 1, 0)]
    with pytest.raises(OpsError, match="floor_min"):
        ops.replenishment(0)


def test_restart_keeps_loss_state_and_resumes_open_reception(ctx: ServiceContext,
                                                             ops: StoreOps) -> None:
    e1 = epc(BAG, 1)
    sid = ops.import_asn_text(json.dumps(asn("R-1", [e1])), "json", "r")["reception"]
    ops.loss._misses[e1] = [("stockroom", 1.0)]
    ops.stop()
    ctx.change_hooks.clear()
    ctx.command_handlers.clear()
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(e1, "reception", -50.0, 5.0)])
    again = StoreOps(ctx)
    again.start()
    assert again.loss.misses(e1) == 1
    assert again.reception(sid)["progress"]["received_listed"] == 1


def test_classification_counts_unknown_products(ctx: ServiceContext, ops: StoreOps) -> None:
    _book(ctx, {epc(BAG, 1): "floor", epc("03760001009996", 1): "floor"})
    res = ops.classification()
    assert res["items"] == {"ours": 1, "unknown_product": 1}
    assert res["unknown_gtins"] == {"03760001009996": 1}


def test_gtin_of_uri_and_parse_time() -> None:
    assert gtin_of_uri(decode(epc(BAG, 5)).uri or "") == BAG
    assert gtin_of_uri("urn:epc:id:sscc:3760001.0000000001") is None
    assert parse_time("2024-01-01T00:00:00Z", "since") == 1704067200.0
    assert parse_time(12.5, "since") == 12.5
    with pytest.raises(ApiError, match="until"):
        parse_time("2024-01-01T00:00:00", "until")


def test_reception_closes_by_rule_when_complete_and_quiet(
    ctx: ServiceContext, ops: StoreOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = [epc(BAG, i) for i in range(200, 203)]
    sid = ops.import_asn_text(json.dumps(asn("A-RULE", listed)), "json", "a.json")["reception"]
    hook(ctx, *(arrive(e, "reception") for e in listed[:2]))
    now = time.time()
    ops.tick()  # incomplete and recent: stays open
    assert ops.reception(sid)["status"] == "open"
    hook(ctx, arrive(listed[2], "reception"))
    ops._close_reception_by_rule(now + 30)  # complete, but not yet quiet for 60 s
    assert ops.reception(sid)["status"] == "open"
    ops._close_reception_by_rule(now + 61)
    assert ops.reception(sid)["status"] == "closed"
    assert outbox(ctx, "reports/reception")[0]["totals"]["received"] == 3


def test_reception_closes_by_rule_when_idle(ctx: ServiceContext, ops: StoreOps) -> None:
    listed = [epc(BAG, i) for i in range(300, 304)]
    sid = ops.import_asn_text(json.dumps(asn("A-IDLE", listed)), "json", "a.json")["reception"]
    hook(ctx, arrive(listed[0], "reception"))
    now = time.time()
    ops._close_reception_by_rule(now + 1000)  # < 1800 s idle: open
    assert ops.reception(sid)["status"] == "open"
    ops._close_reception_by_rule(now + 1801)
    report = outbox(ctx, "reports/reception")[0]
    assert (report["totals"]["received"], report["totals"]["missing"]) == (1, 3)


def test_a_failed_count_commit_is_retried_without_counting_twice(
    ctx: ServiceContext, ops: StoreOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rfidd.ops.service as svc_mod

    stock = [epc(BAG, 400 + i) for i in range(5)]
    _book(ctx, dict.fromkeys(stock, "stockroom"))
    ops.start_count(["stockroom"])
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(e, "stockroom", -60.0, 3000.0) for e in stock[1:]])
    real = svc_mod.store.finish_count
    calls = {"n": 0}

    def flaky(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(svc_mod.store, "finish_count", flaky)
    with pytest.raises(RuntimeError):
        ops.stop_count()
    assert ops.loss.misses(stock[0]) == 0  # the failed attempt left no trace
    doc = ops.stop_count()  # staff (or the timed stop) retries
    assert [m["epc"] for m in doc["missing"]] == [stock[0]]
    assert ops.loss.misses(stock[0]) == 1


def test_asn_with_epc_uris_matches_the_tags_read(ctx: ServiceContext, ops: StoreOps) -> None:
    """ERPs send URIs; the tags say hex, with whatever filter value they were encoded with."""
    from inventory.epc import sgtin96_hex as encode

    read = encode(BAG, 600, 7, filter_value=3)  # a tag encoded with filter 3, already seen here
    with ctx.db.write() as s:  # as the ingest writes it: with its decoded URI
        repo.upsert_items(s, [repo.ItemUpsert(read, 500.0, "reception", gtin=BAG,
                                              epc_uri=decode(read).uri)], 500.0)
    never_seen = decode(epc(BAG, 601)).uri
    doc = asn("A-URI", [])
    doc["epcs"] = [decode(read).uri, never_seen]
    res = ops.import_asn_text(json.dumps(doc), "json", "a.json")
    assert res["errors"] == [] and res["new"] == ["A-URI"], res
    hook(ctx, arrive(read, "reception"))
    report = ops.close_reception()
    assert [r["epc"] for r in report["received"]] == [read]
    assert [m["epc"] for m in report["missing"]] == [epc(BAG, 601)]
    bad = asn("A-BAD", [])
    bad["epcs"] = ["urn:epc:id:sscc:0614141.1234567890"]
    out = ops.import_asn_text(json.dumps(bad), "json", "b.json")
    assert "only SGTIN URIs" in " ".join(out["errors"])
