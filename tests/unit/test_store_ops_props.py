"""Property tests: reconciliation invariants hold for any book and any sightings, in any order."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.asn import Asn
from inventory.counting import CountResult, CountSession
from inventory.reception import ReceptionSession
from inventory.shrinkage import LossTracker

ZONES = ["stock", "floor", "fitting", "exit"]
GTINS = ["80614141123458", "06291041500213", "00000096385074"]


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


def gtin_of(epc: str) -> str | None:
    n = int(epc[-8:], 16)
    return None if n % 7 == 6 else GTINS[n % 3]


def record_of(epc: str) -> str | None:
    n = int(epc[-8:], 16)
    return None if n % 11 == 10 else f"SKU{n % 4}"


epc_ids = st.integers(0, 60)
books = st.dictionaries(epc_ids.map(E), st.sampled_from(ZONES), max_size=40)
sightings = st.lists(st.tuples(epc_ids.map(E), st.sampled_from(ZONES)), max_size=80)
scopes = st.sets(st.sampled_from(ZONES), min_size=1)


def run_count(scope: set[str], book: dict[str, str], seen: list[tuple[str, str]],
              batch: int = 0) -> CountResult:
    s = CountSession(scope, book, record_of=record_of, started_at=0.0)
    if batch:
        for i in range(0, len(seen), batch):
            s.observe_many(seen[i:i + batch])
    else:
        for e, z in seen:
            s.observe(e, z)
    return s.finish(at=1.0)


@settings(max_examples=300, deadline=None)
@given(scopes, books, sightings)
def test_every_expected_item_is_exactly_one_of_found_missing_misplaced(
    scope: set[str], book: dict[str, str], seen: list[tuple[str, str]]
) -> None:
    r = run_count(scope, book, seen)
    expected = {e for e, z in book.items() if z in scope}
    missing = {m.epc for m in r.missing}
    misplaced = {m.epc for m in r.misplaced}
    assert r.found | missing | misplaced == expected
    assert len(r.found) + len(missing) + len(misplaced) == len(expected) == r.expected
    # The definitions, checked naively against the sightings.
    pairs = set(seen)
    seen_epcs = {e for e, _ in seen}
    assert r.found == {e for e in expected if (e, book[e]) in pairs}
    assert missing == expected - seen_epcs
    assert all((m.epc, m.found_zone) in pairs and m.found_zone != m.booked_zone
               for m in r.misplaced)
    counted_extra = {e for e, z in seen if z in scope and e not in expected}
    assert {u.epc for u in r.unexpected} | set(r.unidentified) == counted_extra
    assert all((u.epc, u.zone) in pairs and u.booked_zone == book.get(u.epc)
               for u in r.unexpected)


@settings(max_examples=300, deadline=None)
@given(scopes, books, sightings)
def test_count_report_sums_to_its_inputs(
    scope: set[str], book: dict[str, str], seen: list[tuple[str, str]]
) -> None:
    r = run_count(scope, book, seen)
    pz = r.per_zone
    assert set(pz) == scope
    for z, t in pz.items():
        assert t.expected == t.found + t.missing + t.misplaced_out
        assert t.expected == sum(1 for zz in book.values() if zz == z)
    assert sum(t.found for t in pz.values()) == len(r.found)
    assert sum(t.missing for t in pz.values()) == len(r.missing)
    assert sum(t.misplaced_out for t in pz.values()) == len(r.misplaced)
    assert sum(t.unexpected for t in pz.values()) == len(r.unexpected)
    # Records: booked sums to the in-scope book, counted to what the count saw in scope.
    in_scope = [e for e, z in book.items() if z in scope and record_of(e) is not None]
    assert sum(x.booked for x in r.records) == len(in_scope)
    counted = (
        sum(1 for e in r.found if record_of(e) is not None)
        + sum(1 for m in r.misplaced if m.found_zone in scope and record_of(m.epc) is not None)
        + len(r.unexpected)
    )
    assert sum(x.counted for x in r.records) == counted
    assert all(x.counted >= 0 and x.booked >= 0 for x in r.records)
    acc = r.accuracy
    for v in (acc.item, acc.record, acc.sku, acc.aggregate):
        assert v is None or 0.0 <= v <= 1.0
    if acc.record is not None and acc.aggregate is not None:
        # A perfect record-level count is perfect in aggregate; the converse need not hold.
        assert acc.record < 1.0 or acc.aggregate == 1.0


@settings(max_examples=200, deadline=None)
@given(scopes, books, sightings, st.randoms(use_true_random=False), st.integers(1, 9))
def test_order_and_batching_of_reads_do_not_matter(
    scope: set[str], book: dict[str, str], seen: list[tuple[str, str]], rnd: object, batch: int
) -> None:
    shuffled = list(seen)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = run_count(scope, book, seen)
    b = run_count(scope, book, shuffled, batch=batch)
    assert a == b
    assert a.to_dict(include_found=True) == b.to_dict(include_found=True)


@settings(max_examples=200, deadline=None)
@given(scopes, books, sightings)
def test_live_progress_agrees_with_final_result(
    scope: set[str], book: dict[str, str], seen: list[tuple[str, str]]
) -> None:
    s = CountSession(scope, book, started_at=0.0)
    s.observe_many(seen)
    p = s.progress()
    r = s.finish(at=1.0)
    assert (p["found"], p["misplaced"], p["not_yet_seen"], p["unexpected"]) == (
        len(r.found), len(r.misplaced), len(r.missing), len(r.unexpected))
    assert {z: v["found"] for z, v in p["zones"].items()} == {
        z: t.found for z, t in r.per_zone.items()}


asn_epcs = st.sets(epc_ids.map(E), max_size=30)
quantities = st.dictionaries(st.sampled_from(GTINS), st.integers(1, 5), max_size=2)
reads = st.lists(epc_ids.map(E), max_size=60)


@settings(max_examples=300, deadline=None)
@given(asn_epcs, quantities, reads, st.randoms(use_true_random=False))
def test_reception_invariants(
    listed: set[str], qty: dict[str, int], read: list[str], rnd: object
) -> None:
    if not listed and not qty:
        listed = {E(0)}
    asn = Asn("A", "WH", "S", datetime(2024, 1, 1, tzinfo=UTC), tuple(sorted(listed)),
              tuple(sorted(qty.items())))
    s = ReceptionSession(asn, gtin_of=gtin_of, opened_at=0.0)
    s.observe(read)
    rep = s.close(at=1.0)
    received, missing = set(rep.received), set(rep.missing)
    # received + missing = expected (item level), disjoint.
    assert received | missing == listed and not received & missing
    # Every distinct read is exactly one of received / received by quantity / unexpected.
    parts = [received, set(rep.received_by_quantity), set(rep.unexpected)]
    assert set().union(*parts) == set(read)
    assert sum(map(len, parts)) == len(set(read))
    for ln in rep.lines:
        assert ln.received - ln.over + ln.short == ln.expected
        assert ln.expected == qty.get(ln.gtin, 0) + sum(1 for e in listed if gtin_of(e) == ln.gtin)
    # Per serial: the lines' received add up to the header's (those with a GTIN), the
    # unexpected reads with a GTIN are in their line's unexpected, never in received.
    assert sum(ln.received for ln in rep.lines) == rep.received_total - sum(
        1 for e in received if gtin_of(e) is None)
    assert sum(ln.unexpected for ln in rep.lines) == sum(1 for e in rep.unexpected if gtin_of(e))
    assert rep.unidentified == sum(1 for e in rep.unexpected if gtin_of(e) is None)
    # Order of reads does not matter.
    shuffled = list(read)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    s2 = ReceptionSession(asn, gtin_of=gtin_of, opened_at=0.0)
    for i in range(0, len(shuffled), 3):
        s2.observe(shuffled[i:i + 3])
    assert s2.close(at=1.0).to_dict() == rep.to_dict()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(books, sightings), min_size=1, max_size=5), st.integers(1, 3))
def test_loss_tracker_suspects_only_after_k_consecutive_misses(
    counts: list[tuple[dict[str, str], list[tuple[str, str]]]], k: int
) -> None:
    t = LossTracker(k, min_confidence=0.5)
    for i, (book, seen) in enumerate(counts):
        r = run_count(set(ZONES), book, seen)
        t.record_count(r, at=float(i))
        located = r.located()
        for s in t.suspected():
            assert s.epc not in located
            assert s.misses >= k and t.misses(s.epc) >= k
            assert 0.5 <= s.confidence <= 1.0
    for rate in t.read_rates().values():
        assert 0.0 < rate.rate < 1.0
