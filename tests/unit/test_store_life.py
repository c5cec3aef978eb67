"""Store life in the lifecycle rules: take-over, holds, pick-ups, returns, restock, reinstate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.epcis import epcis_document, to_epcis
from inventory.events import ItemEvent
from inventory.lifecycle import (
    FLOOR_KINDS,
    Hold,
    ItemState,
    Lifecycle,
    Outcome,
    Status,
    Step,
    Transition,
)

EPC = "3034257BF7194E4000003039"
STORE, OTHER = "store-paris", "store-lyon"
SGLN = "urn:epc:id:sgln:0614141.00777.0"
T0 = 1_700_000_000.0
DAY = 86400.0
LC = Lifecycle()
DATA = Path(__file__).resolve().parents[1] / "data"


def tr(step: Step, at: float = T0, **kw: object) -> Transition:
    return Transition(step=step, epc=EPC, at=at, site=STORE, site_sgln=SGLN, **kw)  # type: ignore[arg-type]


def ok(state: ItemState | None, t: Transition) -> Outcome:
    out = LC.apply(state, t)
    assert out.accepted, out.reason
    assert out.state is not None and len(out.events) == 1
    return out


def refused(state: ItemState | None, t: Transition, fragment: str) -> Outcome:
    out = LC.apply(state, t)
    assert not out.accepted and out.events == () and out.state is state
    assert out.reason is not None and fragment in out.reason, out.reason
    return out


def taken_over(kind: str = "stock") -> ItemState:
    out = ok(None, tr(Step.TAKEOVER, txn="cnt-1", zone=kind, zone_kind=kind))
    assert out.state is not None
    return out.state


def test_takeover_puts_found_stock_on_the_books_at_its_zone() -> None:
    back = ok(None, tr(Step.TAKEOVER, txn="cnt-1", zone="stockroom", zone_kind="stock"))
    front = ok(None, tr(Step.TAKEOVER, txn="cnt-1", zone="floor", zone_kind="floor"))
    assert back.state is not None and back.state.status is Status.IN_STOCK
    assert front.state is not None and front.state.status is Status.ON_FLOOR
    ev = front.events[0]
    assert (ev.biz_step, ev.disposition) == ("cycle_counting", "sellable_accessible")
    assert back.events[0].disposition == "sellable_not_accessible"
    assert front.note_code == "taken_over" and ev.extensions == {"takenOver": True}
    refused(back.state, tr(Step.TAKEOVER, txn="cnt-2", zone_kind="stock"), "already on the books")


@pytest.mark.parametrize("step,extra", [
    (Step.LOAN_OUT, {"due": T0 + 3 * DAY}),
    (Step.REPAIR_IN, {}),
    (Step.TRANSFER_OUT, {"to_site": OTHER, "txn": "D-1"}),
    (Step.SELL, {"txn": "R-1"}),
    (Step.HOLD, {"hold": Hold("C-1")}),
])
def test_every_step_works_on_a_taken_over_item(step: Step, extra: dict[str, object]) -> None:
    ok(taken_over(), tr(step, T0 + 60, **extra))


def test_hold_release_and_sale() -> None:
    st0 = taken_over("floor")
    held = ok(st0, tr(Step.HOLD, T0 + 1, hold=Hold("C-9", staff="anna", until=T0 + DAY)))
    assert held.state is not None and held.state.status is Status.HELD
    ev = held.events[0]
    assert (ev.biz_step, ev.disposition) == ("holding", "reserved")
    assert ev.extensions["holdClient"] == "C-9"
    refused(held.state, tr(Step.HOLD, T0 + 2, hold=Hold("C-10")), "already held for client C-9")
    refused(held.state, tr(Step.LOAN_OUT, T0 + 2, due=T0 + DAY), "held for client C-9")
    rel = ok(held.state, tr(Step.RELEASE, T0 + 3))
    assert rel.state is not None and rel.state.status is Status.ON_FLOOR
    assert rel.events[0].biz_step == "stocking" and rel.state.hold is None
    sold = ok(held.state, tr(Step.SELL, T0 + 4, txn="R-5"))
    assert sold.state is not None and sold.state.status is Status.SOLD
    assert sold.state.hold is None


def test_hold_needs_a_client_and_a_future_expiry() -> None:
    refused(taken_over(), tr(Step.HOLD, hold=None), "no client")
    refused(taken_over(), tr(Step.HOLD, T0 + 10, hold=Hold("C", until=T0)), "not after")
    refused(None, tr(Step.HOLD, hold=Hold("C")), "unknown item")


def test_hold_for_another_store_travels_there_by_transfer() -> None:
    held = ok(taken_over(), tr(Step.HOLD, hold=Hold("C-3", for_site=OTHER))).state
    assert held is not None
    refused(held, tr(Step.TRANSFER_OUT, to_site="store-nice", txn="D-1"), "held for client")
    out = ok(held, tr(Step.TRANSFER_OUT, to_site=OTHER, txn="D-2"))
    assert out.state is not None and out.state.status is Status.IN_TRANSIT
    assert out.state.hold is None


def test_sold_awaiting_collection_stays_until_collected() -> None:
    out = ok(taken_over("floor"), tr(Step.SELL, txn="R-1", collect_later=True))
    st0 = out.state
    assert st0 is not None and st0.status is Status.AWAITING_COLLECTION
    assert out.events[0].disposition == "retail_sold"
    refused(st0, tr(Step.EXIT_UNSOLD, T0 + 1), "not collected")
    refused(st0, tr(Step.SELL, T0 + 1, txn="R-2"), "already sold")
    refused(st0, tr(Step.DESTROY, T0 + 1), "customer's item")
    got = ok(st0, tr(Step.COLLECT, T0 + 2))
    assert got.state is not None and got.state.status is Status.SOLD
    assert (got.events[0].biz_step, got.events[0].biz_location) == ("departing", None)
    refused(got.state, tr(Step.COLLECT, T0 + 3), "sold")


def test_exit_of_a_held_item_is_suspected_theft() -> None:
    held = ok(taken_over(), tr(Step.HOLD, hold=Hold("C"))).state
    out = ok(held, tr(Step.EXIT_UNSOLD, T0 + 1))
    assert out.state is not None and out.state.status is Status.MISSING


def sold_item() -> ItemState:
    st0 = ok(taken_over("floor"), tr(Step.SELL, T0 + 10, txn="R-1")).state
    assert st0 is not None
    return st0


@pytest.mark.parametrize("target,status,step", [
    ("stock", Status.IN_STOCK, "storing"), ("floor", Status.ON_FLOOR, "stocking"),
    ("repair", Status.IN_REPAIR, "repairing"), ("destroy", Status.DESTROYED, "destroying"),
])
def test_restock_sends_a_return_to_its_destination(target: str, status: Status,
                                                    step: str) -> None:
    ret = ok(sold_item(), tr(Step.RETURN, T0 + DAY, txn="RMA-1")).state
    out = ok(ret, tr(Step.RESTOCK, T0 + DAY + 60, target=target))
    assert out.state is not None and out.state.status is status
    assert out.events[0].biz_step == step


def test_restock_refusals() -> None:
    ret = ok(sold_item(), tr(Step.RETURN, T0 + DAY, txn="RMA-1")).state
    refused(ret, tr(Step.RESTOCK, target="bin"), "not one of")
    refused(taken_over(), tr(Step.RESTOCK, target="stock"), "in stock")


def test_a_return_the_readers_contradict_is_refused() -> None:
    refused(None, tr(Step.RETURN, T0, txn="RMA-1", seen_kind="stock", seen_since=T0 - 60),
            "readers see it in the stockroom")
    refused(None, tr(Step.RETURN, T0, txn="RMA-1", seen_kind="floor", seen_since=T0 - DAY),
            "since")
    refused(taken_over(), tr(Step.RETURN, T0, txn="RMA-1"), "not sold")
    # Brought in by the customer just now: accepted, flagged for HQ.
    out = ok(None, tr(Step.RETURN, T0, txn="RMA-1", seen_kind="floor", seen_since=T0 - 30))
    assert out.note_code == "unverified_return"
    # A sale on the books wins over the readers (the client is at the counter with it).
    ok(sold_item(), tr(Step.RETURN, T0 + DAY, txn="RMA-2", seen_kind="stock"))


def test_reinstate_after_a_false_alarm_and_count_recovery() -> None:
    gone = ok(taken_over(), tr(Step.EXIT_UNSOLD, T0 + 1)).state
    back = ok(gone, tr(Step.REINSTATE, T0 + 2, zone_kind="floor"))
    assert back.state is not None and back.state.status is Status.ON_FLOOR
    assert back.events[0].biz_step == "stocking"
    refused(back.state, tr(Step.REINSTATE, T0 + 3), "not suspected stolen")
    found = ok(gone, tr(Step.COUNT, T0 + 4, txn="cnt-2", zone_kind="stock"))
    assert found.state is not None and found.state.status is Status.IN_STOCK


def test_a_count_books_the_zone_it_found_the_item_in() -> None:
    out = ok(taken_over("stock"), tr(Step.COUNT, T0 + 5, txn="cnt-2", zone_kind="floor"))
    assert out.state is not None and out.state.status is Status.ON_FLOOR
    assert out.events[0].disposition == "sellable_accessible"
    same = ok(out.state, tr(Step.COUNT, T0 + 6, txn="cnt-3", zone_kind="fitting"))
    assert same.events[0].disposition is None  # an observation: nothing changed
    held = ok(taken_over(), tr(Step.HOLD, hold=Hold("C"))).state
    seen = ok(held, tr(Step.COUNT, T0 + 7, txn="cnt-4", zone_kind="floor"))
    assert seen.state is not None and seen.state.status is Status.HELD


def test_every_new_step_validates_against_the_gs1_schema() -> None:
    schema = json.loads((DATA / "EPCIS-JSON-Schema.json").read_text())
    events: list[ItemEvent] = []
    st0 = taken_over("floor")
    events += ok(None, tr(Step.TAKEOVER, txn="cnt-1", zone_kind="floor")).events
    held = ok(st0, tr(Step.HOLD, hold=Hold("C", until=T0 + DAY, for_site=OTHER)))
    events += held.events
    events += ok(held.state, tr(Step.RELEASE, T0 + 1)).events
    pick = ok(st0, tr(Step.SELL, T0 + 2, txn="R-1", collect_later=True))
    events += pick.events + ok(pick.state, tr(Step.COLLECT, T0 + 3)).events
    ret = ok(pick.state, tr(Step.RETURN, T0 + 4, txn="RMA-1"))
    events += ret.events + ok(ret.state, tr(Step.RESTOCK, T0 + 5, target="floor")).events
    gone = ok(st0, tr(Step.EXIT_UNSOLD, T0 + 6))
    events += ok(gone.state, tr(Step.REINSTATE, T0 + 7)).events
    doc = epcis_document([to_epcis(e, "Europe/Paris") for e in events], datetime.now(UTC))
    jsonschema.Draft7Validator(schema).validate(doc)
    assert len({e.event_id for e in events}) == len(events)


STEPS = [Step.TAKEOVER, Step.HOLD, Step.RELEASE, Step.COLLECT, Step.RESTOCK, Step.REINSTATE,
         Step.SELL, Step.RETURN, Step.EXIT_UNSOLD, Step.COUNT, Step.LOAN_OUT, Step.LOAN_BACK,
         Step.STOCK, Step.STORE, Step.REPAIR_IN, Step.REPAIR_OUT, Step.DESTROY]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STEPS), st.booleans(),
                          st.sampled_from(["stock", "floor", "fitting"]),
                          st.sampled_from(["stock", "floor", "repair", "destroy"])),
                max_size=12))
def test_any_sequence_keeps_the_books_consistent(
        seq: list[tuple[Step, bool, str, str]]) -> None:
    """Whatever staff do in whatever order: a rejection changes nothing; an accepted step
    leaves a state whose disposition is its status's; sellable stock is in or on the floor
    exactly where the last shelf step put it; a hold exists only while HELD."""
    state: ItemState | None = None
    t = T0
    for i, (step, later, kind, target) in enumerate(seq):
        t += 3600
        out = LC.apply(state, tr(step, t, txn=f"T{i}", zone_kind=kind, target=target,
                                 collect_later=later, hold=Hold(f"C{i}"), due=t + DAY))
        if not out.accepted:
            assert out.state is state and out.events == ()
            continue
        assert out.state is not None
        state = out.state
        assert (state.hold is not None) == (state.status is Status.HELD)
        assert len(out.events) == 1
        if state.status is Status.HELD:
            assert state.disposition == "reserved"
        if step in (Step.TAKEOVER, Step.REINSTATE) or (
                step is Step.COUNT and state.status in (Status.IN_STOCK, Status.ON_FLOOR)):
            assert (state.status is Status.ON_FLOOR) == (kind in FLOOR_KINDS)
