"""PresenceTracker: arrivals, RSSI-smoothed moves with a decaying margin, departures, restore."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.presence import (
    ChangeKind,
    PresenceChange,
    PresenceRow,
    PresenceTracker,
    ZoneRead,
)

A = "3034257BF7194E4000000001"
B = "3034257BF7194E4000000002"
C = "3034257BF7194E4000000003"
T0 = 1_700_000_000.0


def tracker(**kw: float) -> PresenceTracker:
    params: dict[str, float] = {
        "departure_s": 300.0,
        "move_margin_db": 6.0,
        "move_margin_decay_s": 30.0,
        "rssi_alpha": 1.0,  # no smoothing unless a test asks: keeps the arithmetic readable
    }
    params.update(kw)
    return PresenceTracker(**params)


def r(epc: str, zone: str, rssi: float | None, t: float, count: int = 1) -> ZoneRead:
    return ZoneRead(epc, zone, rssi, t, count)


def test_first_read_arrives_then_same_zone_is_silent() -> None:
    tr = tracker()
    assert tr.observe([r(A, "stock", -60, T0)]) == [
        PresenceChange(ChangeKind.ARRIVED, A, "stock", None, T0)
    ]
    assert tr.observe([r(A, "stock", -61, T0 + 1, count=3), r(A, "stock", -59, T0 + 2)]) == []
    row = tr.get(A)
    assert row is not None
    assert (row.zone, row.since, row.last_seen, row.read_count) == ("stock", T0, T0 + 2, 5)
    assert row.rssi_dbm == -59
    assert tr.zone_of(A) == "stock" and A in tr and len(tr) == 1


def test_move_needs_the_margin() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0)])
    # 1 s later the margin is 6 * (1 - 1/30) = 5.8 dB: beating by 2 dB is not enough.
    assert tr.observe([r(A, "floor", -58, T0 + 1)]) == []
    assert tr.zone_of(A) == "stock"
    assert tr.observe([r(A, "floor", -54, T0 + 1)]) == [
        PresenceChange(ChangeKind.MOVED, A, "floor", "stock", T0 + 1)
    ]
    assert tr.zone_of(A) == "floor"
    row = tr.get(A)
    assert row is not None and row.since == T0 + 1 and row.rssi_dbm == -54


def test_margin_decays_linearly_with_time_since_current_zone_saw_the_item() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0)])
    # 10 s unseen by stock: margin 4 dB; 3.5 dB is not enough.
    assert tr.observe([r(A, "floor", -56.5, T0 + 10)]) == []
    # 15 s: margin 3 dB; 3.5 dB wins.
    changes = tr.observe([r(A, "floor", -56.5, T0 + 15)])
    assert [c.kind for c in changes] == [ChangeKind.MOVED]


def test_current_zone_refresh_restores_the_full_margin() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0)])
    tr.observe([r(A, "stock", -60, T0 + 14)])
    assert tr.observe([r(A, "floor", -56.5, T0 + 15)]) == []  # margin back to 5.8 dB


def test_after_decay_any_zone_that_sees_the_item_wins() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -40, T0)])
    assert tr.observe([r(A, "floor", -75, T0 + 29)]) == []
    changes = tr.observe([r(A, "floor", -75, T0 + 30)])
    assert changes == [PresenceChange(ChangeKind.MOVED, A, "floor", "stock", T0 + 30)]


def test_reads_without_rssi_count_as_equal_strength() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", None, T0)])
    assert tr.observe([r(A, "floor", None, T0 + 5)]) == []
    tr.observe([r(A, "stock", -70, T0 + 6)])
    assert tr.observe([r(A, "floor", None, T0 + 7)]) == []  # still "equal": margin holds
    assert tr.observe([r(A, "floor", None, T0 + 36)])[0].kind is ChangeKind.MOVED


def test_zero_margin_moves_on_equal_strength() -> None:
    tr = tracker(move_margin_db=0.0)
    tr.observe([r(A, "stock", None, T0)])
    assert tr.observe([r(A, "floor", None, T0 + 0.1)])[0].zone == "floor"


def test_ewma_smooths_a_single_strong_cross_read() -> None:
    tr = tracker(rssi_alpha=0.25)
    tr.observe([r(A, "stock", -60, T0)])
    tr.observe([r(A, "floor", -70, T0 + 0.1)])
    # One -50 read: floor EWMA -70 + 0.25*20 = -65 — far from beating -60 + margin.
    assert tr.observe([r(A, "floor", -50, T0 + 0.2)]) == []
    # Persistently strong floor reads pull the EWMA up until it beats the margin.
    moved = []
    for i in range(20):
        moved += tr.observe([r(A, "floor", -50, T0 + 0.3 + i * 0.01)])
    assert [c.kind for c in moved] == [ChangeKind.MOVED]
    assert tr.zone_of(A) == "floor"


def test_item_can_move_back() -> None:
    tr = tracker(move_margin_db=3.0)
    tr.observe([r(A, "stock", -60, T0)])
    tr.observe([r(A, "floor", -50, T0 + 1)])
    back = tr.observe([r(A, "stock", -40, T0 + 2)])
    assert back == [PresenceChange(ChangeKind.MOVED, A, "stock", "floor", T0 + 2)]


def test_stale_other_zone_smoothing_restarts() -> None:
    tr = tracker(rssi_alpha=0.5, move_margin_decay_s=30.0)
    tr.observe([r(A, "stock", -60, T0)])
    tr.observe([r(A, "floor", -90, T0 + 1)])  # weak cross read, long ago
    tr.observe([r(A, "stock", -60, T0 + 100)])
    # Without a restart the floor EWMA would be (-90 + -50)/2 = -70 and lose.
    assert tr.observe([r(A, "floor", -50, T0 + 100.5)])[0].zone == "floor"


def test_departure_after_departure_s_unseen() -> None:
    tr = tracker(departure_s=60.0)
    tr.observe([r(A, "stock", -60, T0), r(B, "floor", -60, T0 + 10)])
    assert tr.sweep(T0 + 60) == []  # exactly departure_s: still present
    gone = tr.sweep(T0 + 61)
    assert gone == [PresenceChange(ChangeKind.DEPARTED, A, None, "stock", T0)]
    assert A not in tr and tr.zone_of(A) is None
    assert tr.sweep(T0 + 65) == []
    assert [c.epc for c in tr.sweep(T0 + 71)] == [B]
    assert len(tr) == 0 and tr.zone_counts() == {}


def test_sweep_uses_reads_in_any_zone() -> None:
    tr = tracker(departure_s=60.0, move_margin_decay_s=100.0)
    tr.observe([r(A, "stock", -40, T0)])
    tr.observe([r(A, "floor", -90, T0 + 50)])  # too weak to move, but it is still here
    assert tr.sweep(T0 + 100) == []
    assert tr.sweep(T0 + 111)[0].from_zone == "stock"


def test_recently_read_items_survive_a_sweep_and_order_does_not_hide_expired_ones() -> None:
    tr = tracker(departure_s=60.0)
    tr.observe([r(A, "stock", -60, T0), r(B, "stock", -60, T0), r(C, "stock", -60, T0)])
    tr.observe([r(A, "stock", -60, T0 + 50)])  # A read again: goes to the back of the order
    assert sorted(c.epc for c in tr.sweep(T0 + 70)) == [B, C]
    assert tr.zone_of(A) == "stock"


def test_reappearing_after_departure_arrives_again() -> None:
    tr = tracker(departure_s=10.0)
    tr.observe([r(A, "stock", -60, T0)])
    tr.sweep(T0 + 20)
    assert tr.observe([r(A, "floor", -60, T0 + 30)]) == [
        PresenceChange(ChangeKind.ARRIVED, A, "floor", None, T0 + 30)
    ]


def test_out_of_order_reads_never_move_last_seen_back() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0 + 10)])
    tr.observe([r(A, "stock", -60, T0 + 5)])
    row = tr.get(A)
    assert row is not None and row.last_seen == T0 + 10


def test_arrival_picks_strongest_zone_of_the_batch() -> None:
    tr = tracker()
    changes = tr.observe(
        [r(A, "floor", -70, T0 + 0.2), r(A, "stock", -50, T0 + 0.1), r(A, "floor", -65, T0)]
    )
    assert changes == [PresenceChange(ChangeKind.ARRIVED, A, "stock", None, T0)]
    # The floor is remembered as another zone: it does not win without beating the margin.
    assert tr.observe([r(A, "floor", -52, T0 + 1)]) == []


def test_arrival_without_rssi_picks_most_read_zone_then_name() -> None:
    tr = tracker()
    got = tr.observe(
        [
            r(A, "stock", -40, T0),
            r(A, "floor", None, T0, count=3),
            r(B, "zeta", None, T0),
            r(B, "alpha", None, T0),
        ]
    )
    assert {(c.epc, c.zone) for c in got} == {(A, "floor"), (B, "alpha")}


def test_changes_order_moves_then_arrivals_by_time() -> None:
    tr = tracker(move_margin_db=0.0)
    tr.observe([r(A, "stock", -60, T0)])
    got = tr.observe(
        [r(C, "floor", -60, T0 + 2), r(B, "floor", -60, T0 + 1), r(A, "floor", -50, T0 + 3)]
    )
    assert [(c.kind, c.epc) for c in got] == [
        (ChangeKind.MOVED, A),
        (ChangeKind.ARRIVED, B),
        (ChangeKind.ARRIVED, C),
    ]


def test_zone_counts_follow_changes() -> None:
    tr = tracker(move_margin_db=0.0)
    tr.observe([r(A, "stock", -60, T0), r(B, "stock", -60, T0), r(C, "floor", -60, T0)])
    assert tr.zone_counts() == {"stock": 2, "floor": 1}
    tr.observe([r(A, "floor", -50, T0 + 1)])
    assert tr.zone_counts() == {"stock": 1, "floor": 2}


def test_snapshot_restore_roundtrip_emits_nothing() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0), r(B, "floor", -55, T0 + 1)])
    snap = tr.snapshot()
    assert [row.epc for row in snap] == [A, B]
    again = tracker()
    again.restore(reversed(snap))
    assert again.snapshot() == snap
    assert again.observe([r(A, "stock", -60, T0 + 2)]) == []
    assert again.zone_counts() == {"stock": 1, "floor": 1}
    assert [c.epc for c in again.sweep(T0 + 301.5)] == [B]


def test_restore_replaces_state_and_restored_items_depart() -> None:
    tr = tracker(departure_s=60.0)
    tr.observe([r(C, "floor", -60, T0)])
    tr.restore([PresenceRow(A, "stock", T0 - 100, T0 - 10, 7, -61.0)])
    assert C not in tr and tr.zone_of(A) == "stock"
    assert tr.sweep(T0 + 51) == [PresenceChange(ChangeKind.DEPARTED, A, None, "stock", T0 - 10)]


def test_touched_since_returns_items_read_after_the_mark() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0), r(B, "stock", -60, T0)])
    mark = tr.mark
    assert tr.touched_since(mark) == []
    tr.observe([r(B, "stock", -60, T0 + 5)])
    tr.observe([r(C, "floor", -60, T0 + 6)])
    assert sorted(row.epc for row in tr.touched_since(mark)) == [B, C]
    assert [row.epc for row in tr.touched_since(tr.mark - 1)] == [C]


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"departure_s": 0.0}, "departure_s"),
        ({"move_margin_db": -1.0}, "move_margin_db"),
        ({"move_margin_decay_s": 0.0}, "move_margin_decay_s"),
        ({"rssi_alpha": 0.0}, "rssi_alpha"),
    ],
)
def test_bad_parameters_are_named(kw: dict[str, float], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        tracker(**kw)


# -- properties -------------------------------------------------------------------------------

EPCS = [f"3034257BF7194E40000000{i:02X}" for i in range(8)]
ZONES = ["stock", "floor", "fitting"]

read_st = st.builds(
    ZoneRead,
    epc=st.sampled_from(EPCS),
    zone=st.sampled_from(ZONES),
    rssi_dbm=st.one_of(st.none(), st.floats(-90, -20, allow_nan=False)),
    seen_at=st.just(T0),
    count=st.integers(1, 5),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(read_st, max_size=40), st.randoms(use_true_random=False))
def test_read_order_within_a_same_time_batch_does_not_change_arrivals(
    reads: list[ZoneRead], rnd: object
) -> None:
    shuffled = list(reads)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = tracker(), tracker()
    arrivals_a = a.observe(reads)
    arrivals_b = b.observe(shuffled)
    assert arrivals_a == arrivals_b
    assert {(x.epc, x.zone, x.read_count) for x in a.snapshot()} == {
        (x.epc, x.zone, x.read_count) for x in b.snapshot()
    }
    assert {c.epc for c in arrivals_a} == {x.epc for x in reads}
    assert all(c.kind is ChangeKind.ARRIVED for c in arrivals_a)


batches_st = st.lists(
    st.lists(
        st.builds(
            ZoneRead,
            epc=st.sampled_from(EPCS),
            zone=st.sampled_from(ZONES),
            rssi_dbm=st.one_of(st.none(), st.integers(-90, -20).map(float)),
            seen_at=st.integers(0, 5).map(float),  # offset within the batch, added below
            count=st.just(1),
        ),
        max_size=15,
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(batches_st, st.floats(0, 20), st.floats(0.5, 30))
def test_every_present_item_has_exactly_one_zone(
    batches: list[list[ZoneRead]], margin: float, decay: float
) -> None:
    tr = tracker(move_margin_db=margin, move_margin_decay_s=decay, departure_s=20.0)
    where: dict[str, str] = {}
    now = T0
    for batch in batches:
        reads = [ZoneRead(x.epc, x.zone, x.rssi_dbm, now + x.seen_at, x.count) for x in batch]
        changes = tr.observe(reads) + tr.sweep(now + 5)
        for c in changes:
            if c.kind is ChangeKind.ARRIVED:
                assert c.epc not in where, "arrived twice without departing"
                assert c.zone is not None
                where[c.epc] = c.zone
            elif c.kind is ChangeKind.MOVED:
                assert where[c.epc] == c.from_zone and c.zone != c.from_zone
                assert c.zone is not None
                where[c.epc] = c.zone
            else:
                assert where.pop(c.epc) == c.from_zone
        now += 7
    snap = tr.snapshot()
    assert len({row.epc for row in snap}) == len(snap)
    assert {row.epc: row.zone for row in snap} == where
    assert sum(tr.zone_counts().values()) == len(tr) == len(where)


def test_restore_accepts_store_rows_and_tuples() -> None:
    class StoreRow:  # shaped like rfidd.store.repo.PresenceRow
        def __init__(self, epc: str, zone: str, since: float, last_seen: float) -> None:
            self.epc, self.zone, self.since, self.last_seen = epc, zone, since, last_seen
            self.rssi_dbm = -62.5

    tr = tracker()
    problems = tr.restore([StoreRow(A, "stock", T0 - 50, T0 - 5), (B, "floor", T0 - 1)])
    assert problems == []
    a, b = tr.get(A), tr.get(B)
    assert a == PresenceRow(A, "stock", T0 - 50, T0 - 5, 0, -62.5)
    assert b == PresenceRow(B, "floor", T0 - 1, T0 - 1, 0, None)
    assert [row.epc for row in tr.snapshot()] == [A, B]


def test_restore_skips_bad_rows_and_says_why() -> None:
    tr = tracker()
    problems = tr.restore(
        [
            (A, "stock", T0),
            ("", "stock", T0),
            (B, None, T0),
            (C, "floor", "yesterday"),
            (C, "floor"),
            object(),
            PresenceRow(A, "floor", T0 + 1, T0 + 1),
        ]
    )
    assert len(problems) == 6
    assert "presence row 1" in problems[0] and "epc" in problems[0]
    assert "zone" in problems[1]
    assert "presence row 3" in problems[2]
    assert "(epc, zone, last_seen)" in problems[3]
    assert "duplicate" in problems[5]
    assert tr.zone_of(A) == "floor" and len(tr) == 1
    assert tr.zone_counts() == {"floor": 1}


def test_paused_zones_do_not_depart_during_a_reader_outage() -> None:
    tr = tracker(departure_s=60.0)
    tr.observe([r(A, "stock", -60, T0), r(B, "floor", -60, T0), r(C, "floor", -60, T0 + 30)])
    gone = tr.sweep(T0 + 100, paused_zones={"floor"})
    assert [c.epc for c in gone] == [A]
    assert tr.zone_of(B) == tr.zone_of(C) == "floor"
    # reader back: C is read again, B is not; B departs with its true last-seen time
    tr.observe([r(C, "floor", -60, T0 + 200)])
    assert tr.sweep(T0 + 200) == [PresenceChange(ChangeKind.DEPARTED, B, None, "floor", T0)]
    assert tr.zone_of(C) == "floor"


def test_touched_since_survives_a_sweep_over_a_paused_zone() -> None:
    """A reader outage in one zone must not hide another zone's reads from counts."""
    t = PresenceTracker(departure_s=10, move_margin_db=0, move_margin_decay_s=1)
    t.observe([ZoneRead(f"AA{i:02d}", "stock", -50.0, 0.0) for i in range(3)])  # stale later
    mark = t.mark
    t.observe([ZoneRead(f"BB{i:02d}", "floor", -50.0, 100.0) for i in range(5)])
    assert t.sweep(105.0, paused_zones={"stock"}) == []  # the stock reader is offline
    assert {r.epc for r in t.touched_since(mark)} == {f"BB{i:02d}" for i in range(5)}
    assert {r.epc for r in t.sweep(200.0)} == {f"AA{i:02d}" for i in range(3)} | {
        f"BB{i:02d}" for i in range(5)}


def test_a_zone_first_seen_by_a_move_is_that_items_zone_for_the_rest_of_the_batch() -> None:
    """The zone index is cached per reader batch: a zone indexed by a move mid-batch must not
    look foreign to the next read (it made a move from 'floor' to 'floor')."""
    tr = tracker(move_margin_db=0.0)
    tr.observe([r(A, "stock", None, T0)])
    got = tr.observe([r(A, "floor", None, T0 + 1), r(A, "floor", None, T0 + 1)])
    assert got == [PresenceChange(ChangeKind.MOVED, A, "floor", "stock", T0 + 1)]


def test_a_departed_items_record_is_reused_clean() -> None:
    tr = tracker(departure_s=10.0, move_margin_db=0.0)
    tr.observe([r(A, "stock", -50, T0), r(A, "floor", -70, T0)])  # A straddles two zones
    assert [c.epc for c in tr.sweep(T0 + 20)] == [A]
    tr.observe([r(B, "fitting", None, T0 + 30, count=2)])
    assert tr.get(B) == PresenceRow(B, "fitting", T0 + 30, T0 + 30, 2, None)
    # B inherits nothing of A's other zones: a floor read is a fresh other zone, no RSSI.
    assert tr.observe([r(B, "floor", None, T0 + 31)])[0].from_zone == "fitting"


def test_a_nan_rssi_counts_as_no_rssi() -> None:
    tr = tracker()
    tr.observe([r(A, "stock", -60, T0)])
    tr.observe([r(A, "stock", float("nan"), T0 + 1)])
    row = tr.get(A)
    assert row is not None and row.rssi_dbm == -60 and row.read_count == 2


def test_many_items_past_one_block_of_records() -> None:
    tr = tracker(departure_s=10.0)
    epcs = [f"{i:024X}" for i in range(5000)]
    tr.observe([r(e, "stock", -60, T0) for e in epcs])
    tr.observe([r(e, "floor", -60, T0 + 8) for e in epcs[::2]])
    assert len(tr) == 5000 and tr.zone_counts() == {"stock": 5000}
    assert len(tr.sweep(T0 + 15)) == 2500
    assert tr.zone_counts() == {"stock": 2500}
    assert {row.epc for row in tr.snapshot()} == set(epcs[::2])
