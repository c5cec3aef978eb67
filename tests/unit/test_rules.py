"""SiteRules: presence changes -> ItemEvents, by zone kind, with extension hooks."""

from __future__ import annotations

import pytest

from inventory.epc import DecodedEpc, decode
from inventory.events import Action, ItemEvent, stable_event_id
from inventory.lifecycle import ItemState, Lifecycle, Status, Step, Transition
from inventory.presence import ChangeKind, PresenceChange, PresenceTracker, ZoneRead
from inventory.rules import ANY, SiteRules

SITE = "store-paris"
SGLN = "urn:epc:id:sgln:0614141.00777.0"
RP = {
    "stockroom": "urn:epc:id:sgln:0614141.00777.stockroom",
    "floor": "urn:epc:id:sgln:0614141.00777.floor",
    "fitting": "urn:epc:id:sgln:0614141.00777.fitting",
    "exit": "urn:epc:id:sgln:0614141.00777.exit",
}
KINDS = {"stockroom": "stock", "floor": "floor", "fitting": "fitting", "exit": "exit"}
EPC = "3034257BF7194E4000003039"
T0 = 1_700_000_000.0


def rules() -> SiteRules:
    return SiteRules(SGLN, RP, KINDS, SITE)


def arrived(zone: str, at: float = T0) -> PresenceChange:
    return PresenceChange(ChangeKind.ARRIVED, EPC, zone, None, at)


def moved(src: str, dst: str, at: float = T0 + 60) -> PresenceChange:
    return PresenceChange(ChangeKind.MOVED, EPC, dst, src, at)


def departed(zone: str, at: float = T0 + 600) -> PresenceChange:
    return PresenceChange(ChangeKind.DEPARTED, EPC, None, zone, at)


def test_arrival_is_a_plain_observation_at_the_zone() -> None:
    [ev] = rules().events_for([arrived("stockroom")])
    assert ev.action is Action.OBSERVE
    assert (ev.biz_step, ev.disposition) == (None, None)
    assert ev.read_point == RP["stockroom"] and ev.biz_location == SGLN
    assert (ev.epcs, ev.event_time, ev.zone, ev.kind) == ((EPC,), T0, "stockroom", "ObjectEvent")


def test_stock_to_floor_is_stocking() -> None:
    [ev] = rules().events_for([moved("stockroom", "floor")])
    assert (ev.biz_step, ev.disposition) == ("stocking", "sellable_accessible")
    assert ev.read_point == RP["floor"] and ev.biz_location == SGLN and ev.zone == "floor"


def test_floor_to_stock_is_storing() -> None:
    [ev] = rules().events_for([moved("floor", "stockroom")])
    assert (ev.biz_step, ev.disposition) == ("storing", "sellable_not_accessible")
    assert ev.read_point == RP["stockroom"]


@pytest.mark.parametrize(("src", "dst"), [("floor", "fitting"), ("fitting", "stockroom")])
def test_other_moves_are_observations_at_the_new_zone(src: str, dst: str) -> None:
    [ev] = rules().events_for([moved(src, dst)])
    assert (ev.biz_step, ev.disposition, ev.read_point) == (None, None, RP[dst])


def test_departure_produces_no_event_by_default() -> None:
    assert rules().events_for([departed("floor")]) == []


def test_event_ids_are_deterministic_and_distinct() -> None:
    changes = [arrived("stockroom"), moved("stockroom", "floor"), moved("floor", "fitting")]
    a, b = rules().events_for(changes), rules().events_for(changes)
    assert [e.event_id for e in a] == [e.event_id for e in b]
    assert len({e.event_id for e in a}) == 3
    other_site = SiteRules(SGLN, RP, KINDS, "store-lyon").events_for(changes)
    assert not {e.event_id for e in a} & {e.event_id for e in other_site}


def test_stocking_id_matches_the_lifecycle_one() -> None:
    """Whether the app records stocking from a move or through Lifecycle, HQ sees one event."""
    [ev] = rules().events_for([moved("stockroom", "floor", at=T0 + 60)])
    state = ItemState(EPC, Status.IN_STOCK, "sellable_not_accessible", SITE, T0)
    out = Lifecycle().apply(state, Transition(Step.STOCK, EPC, T0 + 60, SITE, SGLN))
    assert out.accepted
    assert out.events[0].event_id == ev.event_id == stable_event_id(SITE, EPC, "stocking", T0 + 60)


def test_undecodable_epcs_are_skipped_and_counted() -> None:
    r = rules()
    bad = "ZZ"
    change = PresenceChange(ChangeKind.ARRIVED, bad, "floor", None, T0)
    assert r.events_for([change], {bad: decode(bad)}) == []
    assert r.skipped == 1
    # non-GS1 but well-formed: still writable (raw URI), so it gets its event
    raw = "E2801160600002000000"
    change = PresenceChange(ChangeKind.ARRIVED, raw, "floor", None, T0)
    assert len(r.events_for([change], {raw: decode(raw)})) == 1


def test_unknown_zone_falls_back_to_the_site_read_point() -> None:
    r = rules()
    [ev] = r.events_for([arrived("mezzanine")])
    assert ev.read_point == SGLN and ev.zone == "mezzanine"
    assert r.unknown_zones == 1


def test_config_must_give_every_kind_a_read_point() -> None:
    with pytest.raises(ValueError, match="mezzanine"):
        SiteRules(SGLN, RP, {**KINDS, "mezzanine": "floor"}, SITE)


def test_hooks_extend_by_zone_kind() -> None:
    r = rules()
    seen: list[tuple[PresenceChange, DecodedEpc | None]] = []

    def exit_alert(change: PresenceChange, d: DecodedEpc | None) -> list[ItemEvent]:
        seen.append((change, d))
        return [r.event(change, "entering_exiting", "stolen")]

    def leaving(change: PresenceChange, d: DecodedEpc | None) -> list[ItemEvent]:
        return [r.event(change)]

    r.on_arrival("exit", exit_alert)
    r.on_move(ANY, "exit", exit_alert)
    r.on_departure("exit", leaving)
    d = decode(EPC)
    [ev] = r.events_for([arrived("exit")], {EPC: d})
    assert (ev.biz_step, ev.disposition, ev.read_point) == (
        "entering_exiting",
        "stolen",
        RP["exit"],
    )
    assert seen[-1][1] is d
    [ev] = r.events_for([moved("floor", "exit")])
    assert ev.biz_step == "entering_exiting"
    [ev] = r.events_for([departed("exit")])
    assert ev.zone == "exit" and ev.read_point == RP["exit"]
    # other kinds keep their defaults
    assert r.events_for([departed("floor")]) == []
    assert r.events_for([moved("stockroom", "floor")])[0].biz_step == "stocking"


def test_exact_move_pair_beats_wildcards() -> None:
    r = rules()
    r.on_move("stock", ANY, lambda c, d: [r.event(c, "picking")])
    assert r.events_for([moved("stockroom", "floor")])[0].biz_step == "stocking"
    assert r.events_for([moved("stockroom", "fitting")])[0].biz_step == "picking"


def test_end_to_end_from_reads() -> None:
    tracker = PresenceTracker(departure_s=60, move_margin_db=3, move_margin_decay_s=10)
    r = rules()
    changes = tracker.observe([ZoneRead(EPC, "stockroom", -60.0, T0)])
    changes += tracker.observe([ZoneRead(EPC, "floor", -50.0, T0 + 1)])
    changes += tracker.sweep(T0 + 100)
    events = r.events_for(changes, {EPC: decode(EPC)})
    assert [(e.biz_step, e.zone) for e in events] == [(None, "stockroom"), ("stocking", "floor")]


def test_the_books_decide_moves_of_the_items_they_hold() -> None:
    """Rules take facts: items on the books get no stocking/storing from the rules (the books
    plan it); stock from before rfidd (not on the books) does."""
    change = moved("stockroom", "floor")
    assert rules().events_for([change], held={change.epc}) == []
    [ev] = rules().events_for([change], held=set())
    assert ev.biz_step == "stocking"
    [obs] = rules().events_for([moved("stockroom", "mezzanine")], held={change.epc})
    assert obs.biz_step is None  # other moves are observations for everyone
