"""Store operations with the lifecycle books, without sockets: the go-live option, handheld
passes merged into one count, a recount of the exceptions, replenishment of sellable stock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from inventory.epc import decode, sgtin96_hex
from inventory.presence import PresenceTracker, ZoneRead
from rfidd.app import OpsServices, build_ops
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.lifecycle.service import LifecycleService
from rfidd.metrics import Metrics
from rfidd.ops import OpsError, OpsSettings
from rfidd.store import repo
from rfidd.store.db import open_database

BAG, SCARF = "03760001001013", "03760001001020"
CATALOG_CSV = (
    "gtin,sku,name,size,colour,category,price,currency,cost\n"
    f"{BAG},BAG-1,Sac Céleste,,noir,bags,3400.00,EUR,900.00\n"
    f"{SCARF},BAG-2,Sac Céleste,,caramel,bags,3400.00,EUR,\n"
)


def epc(gtin: str, serial: int) -> str:
    return sgtin96_hex(gtin, serial, 7)


@pytest.fixture
def store() -> Iterator[tuple[OpsServices, LifecycleService, ServiceContext]]:
    cfg = Config.model_validate({
        "site": {"id": "s1", "name": "Unit", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": "sqlite://"}, "mqtt": {"enabled": False},
        "http": {"enabled": False}, "counts": {"first_count_takes_over": True},
        "zones": {"stockroom": {"kind": "stock"}, "floor": {"kind": "floor"},
                  "exit": {"kind": "exit"}},
    })
    db = open_database(cfg.database.url)
    ctx = ServiceContext(cfg, db, Metrics(), PresenceTracker(300, 0, 1), DomainLock())
    books = LifecycleService(ctx)
    ops = build_ops(ctx, OpsSettings(loss_min_confidence=0.5), books=books)  # as app.py does
    ops.start()
    assert ops.catalog.import_catalog_text(CATALOG_CSV, "csv", "catalog.csv")["imported"] == 2
    try:
        yield ops, books, ctx
    finally:
        db.dispose()


def read(ctx: ServiceContext, t: float, pairs: list[tuple[str, str]]) -> None:
    """Reads as the ingest applies them: the tracker, and the items' last zones."""
    with ctx.tracker_lock:
        ctx.tracker.observe([ZoneRead(e, z, -60.0, t) for e, z in pairs])
    with ctx.db.write() as s:
        repo.upsert_items(s, [repo.ItemUpsert(e, t, z, gtin=decode(e).gtin14)
                              for e, z in pairs], t)


def status(books: LifecycleService, e: str) -> Any:
    st = books.item_state(e)
    return None if st is None else st["status"]


def test_first_count_takes_over_then_counts_expect_the_books(store: Any) -> None:
    ops, books, ctx = store
    bags = [epc(BAG, i) for i in range(4)]
    first = ops.counting.start_count(["stockroom", "floor"])
    assert first["adopt"] is True
    read(ctx, 1000.0, [(bags[0], "stockroom"), (bags[1], "stockroom"), (bags[2], "floor")])
    doc = ops.counting.stop_count()
    assert doc["adopt"] is True and sorted(doc["books"]["taken_over"]) == sorted(bags[:3])
    assert [status(books, e) for e in bags[:3]] == ["in_stock", "in_stock", "on_floor"]
    second = ops.counting.start_count(["stockroom", "floor"])
    assert second["adopt"] is False and second["progress"]["expected"] == 3
    read(ctx, 2000.0, [(bags[0], "stockroom"), (bags[2], "stockroom"), (bags[3], "floor")])
    doc = ops.counting.stop_count()
    assert doc["books"]["moved"] == [bags[2]] and doc["books"]["not_on_books"] == [bags[3]]
    assert [m["epc"] for m in doc["missing"]] == [bags[1]]
    assert [u["epc"] for u in doc["unexpected"]] == [bags[3]]
    assert status(books, bags[2]) == "in_stock"


def test_handheld_passes_merge_and_a_recount_checks_the_exceptions(store: Any) -> None:
    ops, _books, ctx = store
    items = [epc(SCARF, i) for i in range(6)]
    ops.counting.start_count(["stockroom"], adopt=True)
    read(ctx, 1000.0, [(e, "stockroom") for e in items])
    ops.counting.stop_count()
    cid = ops.counting.start_count(["stockroom"])["session_id"]
    p1 = ops.counting.add_pass(cid, "stockroom", items[:3], device="HH-1", operator="anna")
    stray = "urn:epc:id:sgtin:3760001.000102.5000"  # an SGTIN URI, as handhelds export
    p2 = ops.counting.add_pass(cid, "stockroom", [stray, *items[2:4]], device="HH-2",
                               operator="bob")
    assert (p1["pass"]["new"], p2["pass"]["read"]) == (3, 3)
    with pytest.raises(OpsError, match=r"epcs\[0\]"):
        ops.counting.add_pass(cid, "stockroom", ["not-an-epc"])
    doc = ops.counting.stop_count()
    assert [m["epc"] for m in doc["missing"]] == items[4:]
    assert [(p["device"], p["operator"], p["read"]) for p in doc["passes"]] == [
        ("HH-1", "anna", 3), ("HH-2", "bob", 3)]
    assert len(doc["unexpected"]) == 1
    re = ops.counting.recount(cid)
    assert re["recount_of"] == cid and re["progress"]["expected"] == 3
    ops.counting.add_pass(re["session_id"], "stockroom", items, device="HH-1")  # reads everything
    redo = ops.counting.stop_count()
    assert redo["totals"]["found"] == 2 and redo["totals"]["unexpected"] == 0
    assert [m["epc"] for m in redo["missing"]] == [doc["unexpected"][0]["epc"]]
    with pytest.raises(OpsError, match="no finished count"):
        ops.counting.recount("cnt-nope")


def test_replenishment_and_shrinkage_follow_the_books(store: Any) -> None:
    ops, books, ctx = store
    bags = [epc(BAG, i) for i in range(3)]
    ops.counting.start_count(["stockroom", "floor"], adopt=True)
    read(ctx, 1000.0, [(bags[0], "stockroom"), (bags[1], "floor"), (bags[2], "floor")])
    ops.counting.stop_count()
    assert ops.replenishment.replenishment() == ()
    books.handle("sale", {"txn": "R-1", "epcs": [bags[1]], "collect_later": True})
    books.handle("hold", {"txn": "H-1", "epcs": [bags[2]], "client": "C-1"})
    (line,) = ops.replenishment.replenishment()
    assert (line.sku, line.stock_qty, line.floor_qty, line.suggested) == ("BAG-1", 1, 0, 1)


def test_replenishment_leaves_out_a_piece_the_count_calls_not_on_the_books(store: Any) -> None:
    """The trial's reception extra: read in the stockroom, never received nor taken over. The
    count says "not on the books"; replenishment must not tell staff to bring it out."""
    ops, _books, ctx = store
    bag, stray = epc(BAG, 1), epc(SCARF, 9)
    ops.counting.start_count(["stockroom", "floor"], adopt=True)
    read(ctx, 1000.0, [(bag, "floor")])
    ops.counting.stop_count()
    ops.counting.start_count(["stockroom", "floor"])
    read(ctx, 2000.0, [(bag, "floor"), (stray, "stockroom")])
    doc = ops.counting.stop_count()
    assert doc["books"]["not_on_books"] == [stray]
    assert ops.replenishment.replenishment_and_unbooked() == ((), [stray])  # said apart
