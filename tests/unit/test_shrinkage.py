"""Loss suspicion from consecutive misses, exit alerts, and the valued shrinkage report."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from inventory.catalog import Catalog, Product
from inventory.counting import CountResult, CountSession
from inventory.shrinkage import (
    EXIT_DISPOSITION,
    ExitMonitor,
    LossTracker,
    SuspectedLoss,
    shrinkage_report,
)


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


def count(book: dict[str, str], seen: dict[str, str], at: float) -> CountResult:
    s = CountSession(sorted(set(book.values())), book, started_at=at)
    s.observe_many((e, z) for e, z in seen.items())
    return s.finish(at=at)


def test_read_rate_is_measured_from_items_known_present() -> None:
    t = LossTracker(2, prior_weight=0)
    book = {E(i): "stock" for i in range(100)}
    # 97 of 100 read; 2 of the 3 misses reappear later, the third never does.
    r = count(book, {e: "stock" for e in list(book)[:97]}, at=1.0)
    t.record_count(r)
    assert t.read_rates()["stock"].rate == pytest.approx(1 - 1e-9)
    t.seen(E(97))
    t.seen(E(98))
    rr = t.read_rates()["stock"]
    assert (rr.hits, rr.missed_present) == (97, 2)
    assert rr.rate == pytest.approx(97 / 99)


def test_one_miss_in_a_good_zone_is_not_yet_lost_two_are() -> None:
    t = LossTracker(2, min_confidence=0.95)
    book = {E(i): "stock" for i in range(200)}
    present = {e: "stock" for e in list(book)[:199]}  # E(199) is gone
    u1 = t.record_count(count(book, present, at=10.0))
    assert u1.newly_suspected == () and t.misses(E(199)) == 1
    assert not t.is_suspected(E(199))
    u2 = t.record_count(count(book, present, at=20.0))
    (s,) = u2.newly_suspected
    assert s.epc == E(199) and s.misses == 2 and s.first_missed_at == 10.0
    assert s.suspected_at == 20.0
    r = t.read_rate("stock")
    assert s.confidence == pytest.approx(1 - (1 - r) ** 2)
    assert t.suspected() == (s,)


def test_poor_zone_needs_more_misses() -> None:
    t = LossTracker(2, min_confidence=0.95, prior_read_rate=0.6, prior_weight=1000)
    book = {E(1): "floor", E(2): "floor"}
    seen = {E(2): "floor"}
    misses_needed = 0
    for i in range(1, 10):
        if t.record_count(count(book, seen, at=float(i))).newly_suspected:
            misses_needed = i
            break
    # 1 - 0.4^k >= 0.95 first holds at k = 4 (0.9744); k = 3 gives 0.936.
    assert misses_needed == 4


def test_reappearing_item_is_reinstated_by_a_read_or_a_count() -> None:
    t = LossTracker(1, min_confidence=0.5)
    book = {E(1): "stock", E(2): "stock", E(3): "stock"}
    u = t.record_count(count(book, {E(3): "stock"}, at=1.0))
    assert {s.epc for s in u.newly_suspected} == {E(1), E(2)}
    assert t.seen(E(1)) is True
    assert t.seen(E(1)) is False and t.seen(E(3)) is False
    # E(2) turns up on the floor during the next count: misplaced counts as present.
    u2 = t.record_count(count(book, {E(2): "floor", E(1): "stock", E(3): "stock"}, at=2.0))
    assert u2.reinstated == (E(2),) and t.suspected() == ()
    assert t.read_rates()["stock"].missed_present == 2


def test_sold_items_are_forgotten() -> None:
    t = LossTracker(1, min_confidence=0.5)
    t.record_count(count({E(1): "stock", E(2): "stock"}, {E(2): "stock"}, at=1.0))
    t.remove(E(1))
    assert t.suspected() == () and t.misses(E(1)) == 0


def test_tracker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LossTracker(0)
    with pytest.raises(ValueError):
        LossTracker(2, min_confidence=1.0)


def test_exit_alert_debounced_sold_items_silent() -> None:
    sold = {E(2)}
    m = ExitMonitor(["exit"], is_sold=sold.__contains__, is_ours=lambda e: e.startswith("3034"),
                    debounce_s=30.0)
    assert m.observe(E(1), "floor", 0.0) is None
    a = m.observe(E(1), "exit", 100.0)
    assert a is not None and a.epc == E(1) and a.zone == "exit"
    assert m.observe(E(1), "exit", 110.0) is None
    assert m.observe(E(1), "exit", 90.0) is None  # late batch
    assert m.observe(E(2), "exit", 100.0) is None
    assert m.observe("E2801160600002054C1D1234", "exit", 100.0) is None
    again = m.observe(E(1), "exit", 130.0)
    assert again is not None and again.alert_id != a.alert_id
    assert (m.alerts, m.suppressed, m.sold_passed, m.foreign) == (2, 2, 1, 1)
    ev = a.to_event("urn:epc:id:sgln:0614141.00001.exit")
    assert ev.biz_step == "entering_exiting" and ev.disposition == EXIT_DISPOSITION == "stolen"
    assert ev.epcs == (E(1),) and ev.event_time == 100.0
    assert ev.event_id == a.to_event(None).event_id
    assert a.to_dict()["type"] == "exit_unsold"


def test_exit_alerts_over_many_reads() -> None:
    m = ExitMonitor(["exit"], is_sold=lambda e: False, debounce_s=10.0, prune_every=3)
    reads = [(E(i % 3), "exit", float(i)) for i in range(30)]
    alerts = m.observe_many(reads)
    # Each of 3 items alerts at t = i, i+12, i+24 (first read at or after last + 10).
    assert [(x.epc, x.at) for x in alerts] == [
        (E(0), 0.0), (E(1), 1.0), (E(2), 2.0), (E(0), 12.0), (E(1), 13.0), (E(2), 14.0),
        (E(0), 24.0), (E(1), 25.0), (E(2), 26.0),
    ]


G1, G2, G3 = "80614141123458", "06291041500213", "00000096385074"
CATALOG = Catalog([
    Product(G1, "SC-1", "Scarf", "U", "navy", "scarves", Decimal("450.00"), "EUR"),
    Product(G2, "TO-1", "Tote", "M", "black", "bags", Decimal("1200.00"), "EUR"),
    Product(G3, "BE-1", "Belt", "90", "brown", "belts", Decimal("300.00"), "USD"),
])
GTIN_OF = {E(1): G1, E(2): G1, E(3): G2, E(4): G3, E(5): G2}


def test_shrinkage_report_values_and_breakdowns() -> None:
    m = ExitMonitor(["exit"], is_sold=lambda e: False, debounce_s=60.0)
    alerts = [m.observe(E(1), "exit", 50.0), m.observe(E(1), "exit", 200.0),
              m.observe(E(5), "exit", 5000.0)]
    suspects = [
        SuspectedLoss(E(1), "floor", 2, 0.99, 10.0, 60.0),  # also confirmed: counted once
        SuspectedLoss(E(2), "stock", 2, 0.99, 10.0, 60.0),
        SuspectedLoss(E(3), "floor", 3, 0.97, 10.0, 70.0),
        SuspectedLoss(E(4), "stock", 2, 0.99, 10.0, 80.0),  # priced in USD: unpriced
        SuspectedLoss(E(6), "stock", 2, 0.99, 10.0, 999.0),  # before the period's end...
    ]
    rep = shrinkage_report(
        0.0, 1000.0, suspected=suspects, exit_alerts=[a for a in alerts if a], currency="EUR",
        sales_value=Decimal("21000"), catalog=CATALOG, gtin_of=GTIN_OF.get,
        home_zone_of={E(1): "floor"}.get,
    )
    assert [(i.epc, i.status) for i in rep.items] == [
        (E(1), "confirmed"), (E(2), "suspected"), (E(3), "suspected"), (E(4), "suspected"),
        (E(6), "suspected"),
    ]
    assert rep.lost_value == Decimal("2100.00")
    assert rep.shrinkage_rate == pytest.approx(0.1)
    tot = rep.totals()
    assert tot["confirmed_value"] == "450.00" and tot["suspected_value"] == "1650.00"
    assert tot["unpriced"] == 2 and tot["items"] == 5 and tot["confirmed"] == 1
    assert rep.by_category["scarves"].items == 2 and rep.by_category["scarves"].confirmed == 1
    assert rep.by_category["(unknown)"].items == 1
    assert rep.by_sku["TO-1"].value == Decimal("1200.00")
    assert rep.by_zone["floor"].items == 2 and rep.by_zone["stock"].items == 3
    assert sum(b.items for b in rep.by_zone.values()) == len(rep.items)
    assert sum(b.value for b in rep.by_category.values()) == rep.lost_value
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["type"] == "shrinkage" and doc["totals"]["value"] == "2100.00"


def test_shrinkage_rate_without_sales() -> None:
    rep = shrinkage_report(0, 1, suspected=[], exit_alerts=[], sales_value=Decimal(0),
                           currency="EUR", catalog=CATALOG, gtin_of=GTIN_OF.get)
    assert rep.shrinkage_rate is None and rep.items == ()


def test_tracker_state_survives_a_restart() -> None:
    t = LossTracker(2, min_confidence=0.9)
    book = {E(i): "stock" for i in range(50)}
    seen = {e: "stock" for e in list(book)[:48]}
    t.record_count(count(book, seen, at=1.0))
    t.seen(E(48))
    state = json.loads(json.dumps(t.to_state()))
    t2 = LossTracker(2, min_confidence=0.9)
    t2.load_state(state)
    assert t2.read_rates() == t.read_rates()
    assert t2.misses(E(49)) == 1 and t2.misses(E(48)) == 0
    u = t2.record_count(count(book, seen, at=2.0))
    assert [s.epc for s in u.newly_suspected] == [E(49)]
    t2.record_count(count(book, seen, at=3.0))
    t3 = LossTracker(2)
    t3.load_state(json.loads(json.dumps(t2.to_state())))
    assert t3.suspected() == t2.suspected() and t3.is_suspected(E(49))
    with pytest.raises(ValueError, match="bad loss tracker state"):
        t3.load_state({"version": 1, "misses": {"X": [["stock"]]}})
    with pytest.raises(ValueError, match="version"):
        t3.load_state({})
