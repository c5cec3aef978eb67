"""Cycle counts: found / missing / misplaced / unexpected and the two accuracy figures."""

from __future__ import annotations

import pytest

from inventory.counting import CountSession, Misplaced, Missing, SessionClosedError, Unexpected


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


# Book: 1-6 in the stockroom (SKU A: 1-4, SKU B: 5-6), 7-9 on the floor (SKU A: 7, SKU C: 8-9),
# 10 booked in the fitting room (not counted), 11 a stock item unknown to the book.
BOOK = {E(i): "stock" for i in range(1, 7)} | {E(i): "floor" for i in range(7, 10)}
BOOK[E(10)] = "fitting"
SKU = {E(i): "A" for i in (1, 2, 3, 4, 7)} | {E(5): "B", E(6): "B", E(8): "C", E(9): "C"}
SKU |= {E(10): "A", E(11): "B"}
FOREIGN = "E2801160600002054C1D1234"


def session() -> CountSession:
    return CountSession(["stock", "floor"], BOOK, record_of=SKU, session_id="C1", started_at=1.0)


def run_scenario(s: CountSession) -> None:
    # 2 missing (E4 stock, E9 floor); E3 moved to the floor; E8 also seen in the stockroom
    # (still found: seen in its booked zone); E10 from the fitting room and E11 unknown seen on
    # the floor; E6 only seen in the fitting room (outside the count): misplaced there.
    s.observe_zone("stock", [E(1), E(2), E(5), E(8), FOREIGN])
    s.observe_zone("floor", [E(7), E(8), E(3), E(10), E(11), E(1)])
    s.observe_zone("fitting", [E(6)])


def test_count_names_exactly_what_was_moved_and_removed() -> None:
    s = session()
    run_scenario(s)
    r = s.finish(at=9.0)
    assert r.expected == 9
    assert r.found == {E(1), E(2), E(5), E(7), E(8)}
    assert r.missing == (Missing(E(4), "stock"), Missing(E(9), "floor"))
    assert r.misplaced == (Misplaced(E(3), "stock", "floor"), Misplaced(E(6), "stock", "fitting"))
    assert r.unexpected == (Unexpected(E(10), "floor", "fitting"), Unexpected(E(11), "floor", None))
    assert r.unidentified == (FOREIGN,)
    assert r.located() == r.found | {E(3), E(6)}
    st, fl = r.per_zone["stock"], r.per_zone["floor"]
    assert (st.expected, st.found, st.missing, st.misplaced_out, st.misplaced_in) == (6, 3, 1, 2, 0)
    assert (fl.expected, fl.found, fl.missing, fl.misplaced_in, fl.unexpected) == (3, 2, 1, 1, 2)


def test_record_accuracy_versus_aggregate() -> None:
    s = session()
    run_scenario(s)
    r = s.finish()
    recs = {(x.record, x.zone): (x.booked, x.counted) for x in r.records}
    assert recs == {
        ("A", "stock"): (4, 2),  # E3 moved out, E4 missing
        ("A", "floor"): (1, 3),  # E3 moved in, E10 unexpected
        ("B", "stock"): (2, 1),  # E6 left for the fitting room
        ("B", "floor"): (0, 1),  # E11 unexpected
        ("C", "floor"): (2, 1),  # E9 missing
    }
    acc = r.accuracy
    assert acc.records == 5 and acc.accurate_records == 0 and acc.record == 0.0
    # Totals: booked 9, counted 8 -> aggregate 8/9 although no record is right.
    assert acc.aggregate == pytest.approx(1 - 1 / 9)
    # SKU totals: A 5 vs 5 (errors cancel across zones), B 2 vs 2, C 2 vs 1.
    assert acc.sku == pytest.approx(2 / 3)
    assert acc.item == pytest.approx(5 / 9)
    d = r.to_dict()
    assert d["totals"] == {
        "expected": 9, "found": 5, "missing": 2, "misplaced": 2, "unexpected": 2,
        "unidentified": 1,
    }
    assert len(d["discrepant_records"]) == 5
    assert "found" not in d and sorted(r.found) == r.to_dict(include_found=True)["found"]


def test_perfect_count() -> None:
    s = CountSession(["stock"], {E(1): "stock", E(2): "stock"}, record_of=SKU)
    s.observe_many([(E(2), "stock"), (E(1), "stock"), (E(1), "stock")])
    r = s.finish()
    assert r.missing == () and r.misplaced == () and r.unexpected == ()
    assert r.accuracy.record == 1.0 and r.accuracy.aggregate == 1.0 and r.accuracy.item == 1.0


def test_progress_is_live_and_matches_result() -> None:
    s = session()
    p0 = s.progress()
    assert p0["expected"] == 9 and p0["found"] == 0 and p0["not_yet_seen"] == 9
    assert p0["zones"] == {
        "floor": {"expected": 3, "found": 0},
        "stock": {"expected": 6, "found": 0},
    }
    # Seen on the floor first, then in its booked stockroom: misplaced, then found.
    s.observe(E(1), "floor")
    assert s.progress()["misplaced"] == 1
    assert s.observe(E(1), "stock") is True
    assert s.observe(E(1), "stock") is False
    run_scenario(s)
    p = s.progress()
    r = s.finish()
    assert p["found"] == len(r.found)
    assert p["misplaced"] == len(r.misplaced)
    assert p["not_yet_seen"] == len(r.missing)
    assert p["unexpected"] == len(r.unexpected) + len(r.unidentified)
    assert p["zones"]["stock"]["found"] == r.per_zone["stock"].found


def test_without_records_accuracy_is_item_level_only() -> None:
    s = CountSession(["stock"], {E(1): "stock"})
    s.observe_zone("stock", [FOREIGN])
    r = s.finish()
    assert r.records == () and r.accuracy.record is None and r.accuracy.item == 0.0
    assert r.unexpected == (Unexpected(FOREIGN, "stock", None),)


def test_finished_count_rejects_reads_and_is_repeatable() -> None:
    s = session()
    run_scenario(s)
    a = s.finish(at=5.0)
    with pytest.raises(SessionClosedError):
        s.observe(E(4), "stock")
    b = s.finish(at=7.0)
    assert a == b and b.finished_at == 5.0


def test_needs_a_zone() -> None:
    with pytest.raises(ValueError, match="zone"):
        CountSession([], BOOK)
