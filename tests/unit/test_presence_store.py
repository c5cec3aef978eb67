"""The presence tracker's compact storage: EPC keys, hash-placed record pages, the coarse
recency order. Checked against a plain model of what departs and what was touched."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.presence import ChangeKind, PresenceTracker, ZoneRead
from inventory.presence_keys import epc_key, epc_keys, epc_of

A = "3034257BF7194E4000000001"


def test_canonical_epcs_are_keyed_by_their_bytes_and_come_back_the_same() -> None:
    assert epc_key(A) == bytes.fromhex(A)
    assert epc_of(epc_key(A)) == A
    assert epc_key("") == b"" and epc_of(b"") == ""


def test_other_strings_are_their_own_key() -> None:
    odd = [A.lower(), "3034 257B", "ABC", "EPC-1", "30342 57B", "e2", "\uff13\uff10"]
    for s in odd:  # lower case, spaces, odd length, not hex, full-width digits
        assert epc_key(s) == s, s
        assert epc_of(epc_key(s)) == s


def test_a_batch_with_one_odd_epc_keys_each_one_on_its_own() -> None:
    batch = [A, A.lower(), "3034 257B", "0011"]
    assert epc_keys(batch) == [epc_key(e) for e in batch]
    assert epc_keys([A, "0011"]) == [bytes.fromhex(A), b"\x00\x11"]
    assert epc_keys(["0011", "2233"]) == [b"\x00\x11", b"\x22\x33"]  # digits only


def test_upper_and_lower_case_epcs_stay_two_items() -> None:
    tr = PresenceTracker(300.0, 0.0, 30.0)
    got = tr.observe([ZoneRead(A, "stock", -50.0, 1.0), ZoneRead(A.lower(), "floor", -50.0, 1.0)])
    assert {(c.epc, c.zone) for c in got} == {(A, "stock"), (A.lower(), "floor")}
    assert len(tr) == 2 and A in tr and A.lower() in tr and A[:-1] not in tr
    assert tr.zone_of(A.lower()) == "floor"
    assert {row.epc for row in tr.snapshot()} == {A, A.lower()}


def test_keys_given_by_the_caller_are_the_same_as_none() -> None:
    a, b = PresenceTracker(300.0, 3.0, 30.0), PresenceTracker(300.0, 3.0, 30.0)
    reads = [ZoneRead(f"{i:024X}", "stock", -50.0, 1.0 + i) for i in range(300)]
    keys = b.keys([r.epc for r in reads])
    assert b.known_keys(keys) == [False] * 300
    assert a.observe(reads) == b.observe(reads, keys)
    assert b.known_keys(keys) == [True] * 300
    assert a.snapshot() == b.snapshot()


def test_record_pages_stay_nearly_full_through_churn() -> None:
    tr = PresenceTracker(10.0, 0.0, 30.0)
    n = 20_000
    tr.observe([ZoneRead(f"{i:024X}", "stock", -50.0, 1.0) for i in range(n)])
    # A page is made only when a key's place is taken in every page: the pages number the
    # most keys at one of 256 places, n/256 and a few standard deviations (6 here: never).
    bound = n + 256 * 6 * (n / 256) ** 0.5
    assert n <= len(tr._rec) // 7 < bound
    # departed items' records are reused: 120,000 items come and go, the pages hold 20,000
    for k in range(5):
        assert len(tr.sweep(20.0 + 20 * k)) == n
        tr.observe([ZoneRead(f"{i:024X}", "stock", -50.0, 21.0 + 20 * k)
                    for i in range(n * (k + 1), n * (k + 2))])
    assert len(tr) == n and len(tr._rec) // 7 < bound


# -- against a model ---------------------------------------------------------------------------

EPCS = [f"3034257BF7194E40000000{i:02X}" for i in range(10)] + ["odd-epc", "ab"]
ZONES = ["stock", "floor", "fitting"]

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("reads"),
            st.lists(st.tuples(st.sampled_from(EPCS), st.sampled_from(ZONES),
                               st.one_of(st.none(), st.integers(-90, -20).map(float)),
                               st.floats(-30, 3)),  # time offset: reader clocks run late
                     max_size=12),
        ),
        st.tuples(st.just("sweep"), st.sets(st.sampled_from(ZONES), max_size=1)),
        st.tuples(st.just("mark"), st.none()),
        st.tuples(st.just("advance"), st.floats(0, 40)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.floats(0.5, 100))
def test_departures_and_touched_items_match_a_plain_model(
        script: list[tuple[str, object]], departure_s: float) -> None:
    """Whatever the read times (late reader clocks included) and however coarse the recency
    order: an item departs at the first sweep after it went unseen for departure_s (unless its
    zone is paused), and `touched_since` is exactly the items read after the mark."""
    tr = PresenceTracker(departure_s, 0.0, 5.0)
    last: dict[str, float] = {}  # present item -> latest read time
    zone: dict[str, str] = {}
    read_after: dict[int, set[str]] = {}  # mark -> items read since
    now = 1000.0
    for kind, arg in script:
        if kind == "reads":
            reads = [ZoneRead(e, z, rssi, now + dt) for e, z, rssi, dt in arg]  # type: ignore[attr-defined]
            for c in tr.observe(reads):
                if c.kind is ChangeKind.ARRIVED:
                    assert c.epc not in last
                assert c.zone is not None
                zone[c.epc] = c.zone
            for r in reads:
                last[r.epc] = max(last.get(r.epc, r.seen_at), r.seen_at)
                for seen in read_after.values():
                    seen.add(r.epc)
        elif kind == "sweep":
            paused: set[str] = arg  # type: ignore[assignment]
            gone = tr.sweep(now, paused_zones=paused)
            expect = {e for e, t in last.items()
                      if t < now - departure_s and zone[e] not in paused}
            assert {c.epc for c in gone} == expect
            for c in gone:
                assert c.at == last.pop(c.epc) and c.from_zone == zone.pop(c.epc)
        elif kind == "mark":
            read_after[tr.mark] = set()
        else:
            now += arg  # type: ignore[operator]
        for m, seen in read_after.items():
            assert set(tr.touched_epcs_since(m)) == seen & last.keys()
        assert {row.epc: row.last_seen for row in tr.snapshot()} == last
        assert len(tr) == len(last)
