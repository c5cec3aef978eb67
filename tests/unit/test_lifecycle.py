"""The item lifecycle: every row of the DESIGN.md table, and the impossible transitions."""

from __future__ import annotations

import pytest

from inventory.events import Action, ItemEvent, stable_event_id
from inventory.lifecycle import (
    BIZ_STEP,
    ItemState,
    Lifecycle,
    Outcome,
    Status,
    Step,
    Transition,
)

EPC = "3034257BF7194E4000003039"
WORKSHOP, STORE, OTHER = "workshop", "store-paris", "store-lyon"
WS_SGLN = "urn:epc:id:sgln:0614141.00001.0"
ST_SGLN = "urn:epc:id:sgln:0614141.00777.0"
OT_SGLN = "urn:epc:id:sgln:0614141.00888.0"
SGLN = {WORKSHOP: WS_SGLN, STORE: ST_SGLN, OTHER: OT_SGLN}
T0 = 1_700_000_000.0
DAY = 86400.0

LC = Lifecycle()


def tr(step: Step, at: float, site: str = STORE, **kw: object) -> Transition:
    return Transition(step=step, epc=EPC, at=at, site=site, site_sgln=SGLN[site], **kw)  # type: ignore[arg-type]


def ok(state: ItemState | None, t: Transition) -> Outcome:
    out = LC.apply(state, t)
    assert out.accepted, out.reason
    assert out.reason is None
    assert out.state is not None
    return out


def rejected(state: ItemState | None, t: Transition, fragment: str) -> Outcome:
    out = LC.apply(state, t)
    assert not out.accepted
    assert out.events == ()
    assert out.state is state, "a rejection must leave the state unchanged"
    assert out.reason is not None and fragment in out.reason, out.reason
    assert t.step.value in out.reason and EPC in out.reason
    return out


def only_event(out: Outcome) -> ItemEvent:
    assert len(out.events) == 1
    return out.events[0]


def at_store(status_path: str = "stock") -> ItemState:
    """An item received at the store, then optionally put on the floor."""
    s = ItemState.shipped_to(EPC, STORE, T0, shipment="DESADV-1")
    st = ok(s, tr(Step.RECEIVE, T0 + 10, txn="DESADV-1")).state
    assert st is not None
    if status_path == "floor":
        st = ok(st, tr(Step.STOCK, T0 + 20)).state
        assert st is not None
    return st


def sold() -> ItemState:
    st = ok(at_store("floor"), tr(Step.SELL, T0 + 30, txn="R-17")).state
    assert st is not None
    return st


# -- the DESIGN.md table, row by row ----------------------------------------------------------


def test_commissioning_adds_an_active_item() -> None:
    out = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP))
    ev = only_event(out)
    assert (ev.action, ev.biz_step, ev.disposition) == (Action.ADD, "commissioning", "active")
    assert ev.epcs == (EPC,) and ev.read_point == WS_SGLN and ev.biz_location == WS_SGLN
    assert ev.event_id == stable_event_id(WORKSHOP, EPC, "commissioning", T0)
    assert out.state is not None
    assert (out.state.status, out.state.site, out.state.disposition) == (
        Status.COMMISSIONED,
        WORKSHOP,
        "active",
    )


def test_packing_and_shipping_from_the_workshop() -> None:
    s = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP)).state
    packed = ok(s, tr(Step.PACK, T0 + 1, site=WORKSHOP))
    ev = only_event(packed)
    assert (ev.action, ev.biz_step, ev.disposition) == (Action.OBSERVE, "packing", "in_progress")
    assert ev.kind == "ObjectEvent" and ev.parent_id is None
    shipped = ok(packed.state, tr(Step.SHIP, T0 + 2, site=WORKSHOP, to_site=STORE, txn="D-9"))
    ev = only_event(shipped)
    assert (ev.biz_step, ev.disposition) == ("shipping", "in_transit")
    assert ev.biz_location is None  # in transit: at no location
    assert ev.biz_transactions == (("desadv", "urn:epcglobal:cbv:bt:0614141000012:D-9"),)
    assert ev.event_id == stable_event_id(WORKSHOP, EPC, "shipping", "desadv:D-9")
    st = shipped.state
    assert st is not None
    assert (st.status, st.destination, st.shipment) == (Status.IN_TRANSIT, STORE, "D-9")


def test_packing_into_a_case_is_an_aggregation() -> None:
    s = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP)).state
    sscc = "urn:epc:id:sscc:0614141.1234567890"
    ev = only_event(ok(s, tr(Step.PACK, T0 + 1, site=WORKSHOP, parent_id=sscc)))
    assert (ev.kind, ev.parent_id, ev.action) == ("AggregationEvent", sscc, Action.ADD)


def test_receiving_at_the_store_against_the_asn() -> None:
    s = ItemState.shipped_to(EPC, STORE, T0, shipment="DESADV-1")
    out = ok(s, tr(Step.RECEIVE, T0 + 10, txn="DESADV-1"))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("receiving", "sellable_not_accessible")
    assert ev.biz_location == ST_SGLN
    assert ev.biz_transactions == (("desadv", "urn:epcglobal:cbv:bt:0614141007776:DESADV-1"),)
    assert out.state is not None
    assert (out.state.status, out.state.site, out.state.destination, out.state.shipment) == (
        Status.IN_STOCK,
        STORE,
        None,
        None,
    )
    assert out.note is None


def test_receiving_against_another_desadv_is_accepted_with_a_note() -> None:
    s = ItemState.shipped_to(EPC, STORE, T0, shipment="DESADV-1")
    out = ok(s, tr(Step.RECEIVE, T0 + 10, txn="DESADV-2"))
    assert out.note is not None and "DESADV-1" in out.note


def test_stocking_and_storing() -> None:
    st = at_store()
    floor = ok(st, tr(Step.STOCK, T0 + 20))
    ev = only_event(floor)
    assert (ev.biz_step, ev.disposition) == ("stocking", "sellable_accessible")
    assert ev.event_id == stable_event_id(STORE, EPC, "stocking", T0 + 20)
    back = ok(floor.state, tr(Step.STORE, T0 + 30))
    ev = only_event(back)
    assert (ev.biz_step, ev.disposition) == ("storing", "sellable_not_accessible")
    assert back.state is not None and back.state.status is Status.IN_STOCK


def test_cycle_count_observes_without_changing_disposition() -> None:
    st = at_store("floor")
    out = ok(st, tr(Step.COUNT, T0 + 40, txn="COUNT-3"))
    ev = only_event(out)
    assert (ev.action, ev.biz_step, ev.disposition) == (Action.OBSERVE, "cycle_counting", None)
    assert ev.biz_transactions == ()
    assert ev.event_id == stable_event_id(STORE, EPC, "cycle_counting", "count:COUNT-3")
    assert out.state is not None
    assert out.state.status is Status.ON_FLOOR
    assert out.state.disposition == "sellable_accessible"
    assert out.state.counted_at == T0 + 40
    assert (out.state.since, out.state.biz_step) == (st.since, "stocking")  # still on the floor


def test_unknown_step_is_a_rejection_not_a_crash() -> None:
    out = LC.apply(None, tr("teleport", T0))  # type: ignore[arg-type]
    assert not out.accepted and "unknown lifecycle step 'teleport'" in (out.reason or "")


def test_selling_at_the_pos() -> None:
    out = ok(at_store("floor"), tr(Step.SELL, T0 + 30, txn="R-17"))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("retail_selling", "retail_sold")
    assert ev.biz_transactions == (("inv", "urn:epcglobal:cbv:bt:0614141007776:R-17"),)
    assert ev.event_id == stable_event_id(STORE, EPC, "retail_selling", "inv:R-17")
    assert ev.biz_location is None
    assert out.state is not None and out.state.sale_txn == "R-17"


def test_sale_transaction_given_as_uri_is_kept() -> None:
    uri = "https://pos.example.com/receipts/R-17"
    ev = only_event(ok(at_store("floor"), tr(Step.SELL, T0 + 30, txn=uri)))
    assert ev.biz_transactions == (("inv", uri),)


def test_customer_return_with_rma() -> None:
    out = ok(sold(), tr(Step.RETURN, T0 + 5 * DAY, txn="RMA-5"))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("receiving", "returned")
    assert ev.biz_transactions[0][0] == "rma"
    assert out.state is not None
    assert (out.state.status, out.state.sale_txn) == (Status.RETURNED, None)
    # a returned item goes back to the stockroom and can be sold again
    again = ok(out.state, tr(Step.STORE, T0 + 6 * DAY))
    ok(again.state, tr(Step.SELL, T0 + 7 * DAY, txn="R-99"))


def test_after_sales_repair_of_a_customer_item() -> None:
    rin = ok(sold(), tr(Step.REPAIR_IN, T0 + DAY))
    ev = only_event(rin)
    assert (ev.biz_step, ev.disposition) == ("repairing", "needs_replacement")
    rout = ok(rin.state, tr(Step.REPAIR_OUT, T0 + 9 * DAY))
    ev = only_event(rout)
    assert (ev.biz_step, ev.disposition) == ("repairing", "available")
    assert rout.state is not None and rout.state.status is Status.SOLD  # back to the customer


def test_repair_of_stock_goes_back_to_stock() -> None:
    rin = ok(at_store("floor"), tr(Step.REPAIR_IN, T0 + DAY))
    rout = ok(rin.state, tr(Step.REPAIR_OUT, T0 + 2 * DAY))
    assert rout.state is not None and rout.state.status is Status.IN_STOCK


def test_loan_out_and_back() -> None:
    due = T0 + 3 * DAY
    out = ok(at_store(), tr(Step.LOAN_OUT, T0 + DAY, due=due))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("shipping", "in_transit")
    assert ev.extensions == {"loanDue": "2023-11-17T22:13:20Z"}
    assert out.state is not None and out.state.loan_due == due
    back = ok(out.state, tr(Step.LOAN_BACK, T0 + 2 * DAY))
    ev = only_event(back)
    assert (ev.biz_step, ev.disposition) == ("receiving", "sellable_not_accessible")
    assert back.note is None
    assert back.state is not None and back.state.loan_due is None


def test_late_loan_return_carries_a_note() -> None:
    out = ok(at_store(), tr(Step.LOAN_OUT, T0 + DAY, due=T0 + 2 * DAY))
    back = ok(out.state, tr(Step.LOAN_BACK, T0 + 4 * DAY))
    assert back.note == "returned 2.0 days after due"


def test_client_approval_loan_can_end_in_a_sale() -> None:
    out = ok(at_store(), tr(Step.LOAN_OUT, T0 + DAY, due=T0 + 2 * DAY))
    ok(out.state, tr(Step.SELL, T0 + 1.5 * DAY, txn="R-20"))


def test_transfer_between_stores() -> None:
    out = ok(at_store(), tr(Step.TRANSFER_OUT, T0 + DAY, to_site=OTHER, txn="T-1"))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("shipping", "in_transit")
    # the receiving store learns of it from the transfer's ASN
    incoming = ItemState.shipped_to(EPC, OTHER, T0 + DAY, shipment="T-1")
    got = ok(incoming, tr(Step.TRANSFER_IN, T0 + 2 * DAY, site=OTHER, txn="T-1"))
    ev = only_event(got)
    assert (ev.biz_step, ev.disposition, ev.biz_location) == (
        "receiving",
        "sellable_not_accessible",
        OT_SGLN,
    )
    assert got.state is not None and got.state.site == OTHER
    # the same state object works too, when one database serves both sites (HQ replay)
    ok(out.state, tr(Step.TRANSFER_IN, T0 + 2 * DAY, site=OTHER))


def test_leaving_through_the_exit_unsold() -> None:
    out = ok(at_store("floor"), tr(Step.EXIT_UNSOLD, T0 + 50))
    ev = only_event(out)
    assert (ev.biz_step, ev.disposition) == ("entering_exiting", "stolen")
    assert out.state is not None and out.state.status is Status.MISSING


def test_count_recovers_a_missing_item() -> None:
    gone = ok(at_store("floor"), tr(Step.EXIT_UNSOLD, T0 + 50)).state
    found = ok(gone, tr(Step.COUNT, T0 + DAY))
    assert found.note == "recovered"
    assert only_event(found).disposition == "sellable_not_accessible"
    assert found.state is not None and found.state.status is Status.IN_STOCK


def test_destroying_and_decommissioning() -> None:
    destroyed = ok(at_store(), tr(Step.DESTROY, T0 + DAY))
    ev = only_event(destroyed)
    assert (ev.biz_step, ev.disposition, ev.action) == ("destroying", "destroyed", Action.OBSERVE)
    killed = ok(destroyed.state, tr(Step.DECOMMISSION, T0 + DAY + 1))
    ev = only_event(killed)
    assert (ev.biz_step, ev.disposition, ev.action) == (
        "decommissioning",
        "inactive",
        Action.DELETE,
    )
    assert killed.state is not None and killed.state.status is Status.DECOMMISSIONED


def test_a_sold_items_tag_can_be_killed_at_any_store() -> None:
    ok(sold(), tr(Step.DECOMMISSION, T0 + DAY, site=OTHER))


def test_every_step_maps_to_a_cbv_biz_step() -> None:
    assert set(BIZ_STEP) == set(Step)


# -- rejections -------------------------------------------------------------------------------


def test_selling_an_item_already_sold() -> None:
    rejected(sold(), tr(Step.SELL, T0 + 40, txn="R-18"), "already sold in transaction R-17")


def test_selling_without_a_transaction() -> None:
    rejected(at_store("floor"), tr(Step.SELL, T0 + 40), "no sale transaction id")


def test_selling_an_item_of_another_store() -> None:
    rejected(at_store("floor"), tr(Step.SELL, T0 + 40, site=OTHER, txn="X"), "at site store-paris")


def test_selling_a_returned_item_before_it_is_back_in_stock() -> None:
    """The till is never blocked: accepted, with a note the service counts."""
    ret = ok(sold(), tr(Step.RETURN, T0 + DAY)).state
    out = ok(ret, tr(Step.SELL, T0 + 2 * DAY, txn="R-2"))
    assert out.note_code == "resold_unrestocked" and "restocked" in (out.note or "")
    assert out.state is not None and out.state.status is Status.SOLD


def test_receiving_an_item_never_shipped_here() -> None:
    rejected(None, tr(Step.RECEIVE, T0), "never shipped to this site")


def test_receiving_an_item_shipped_elsewhere() -> None:
    s = ItemState.shipped_to(EPC, OTHER, T0)
    rejected(s, tr(Step.RECEIVE, T0 + 1), "shipped to store-lyon")


def test_receiving_an_item_twice() -> None:
    rejected(at_store(), tr(Step.RECEIVE, T0 + 100, txn="DESADV-1"), "not in transit")


@pytest.mark.parametrize("step", [Step.STOCK, Step.STORE, Step.LOAN_OUT, Step.PACK])
def test_sold_items_cannot_go_back_on_the_shelves(step: Step) -> None:
    rejected(sold(), tr(step, T0 + 40, due=T0 + DAY), "sold in transaction R-17")


def test_stocking_an_item_already_on_the_floor() -> None:
    rejected(at_store("floor"), tr(Step.STOCK, T0 + 40), "already on the sales floor")


def test_storing_an_item_already_in_the_stockroom() -> None:
    rejected(at_store(), tr(Step.STORE, T0 + 40), "already in the stockroom")


def test_commissioning_twice() -> None:
    s = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP)).state
    rejected(s, tr(Step.COMMISSION, T0 + 1, site=WORKSHOP), "already commissioned")


def test_shipping_needs_a_destination_other_than_here() -> None:
    rejected(at_store(), tr(Step.SHIP, T0 + 40), "no destination")
    rejected(at_store(), tr(Step.SHIP, T0 + 40, to_site=STORE), "destination is this site")


def test_shipping_an_item_in_transit() -> None:
    s = ItemState.shipped_to(EPC, STORE, T0)
    rejected(s, tr(Step.SHIP, T0 + 1, to_site=OTHER), "in transit to store-paris")


def test_transfer_out_of_a_freshly_commissioned_item_is_a_ship_not_a_transfer() -> None:
    s = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP)).state
    rejected(s, tr(Step.TRANSFER_OUT, T0 + 1, site=WORKSHOP, to_site=STORE), "commissioned")


def test_returning_an_item_that_was_not_sold() -> None:
    rejected(at_store("floor"), tr(Step.RETURN, T0 + 40), "not sold")


def test_return_of_an_item_sold_elsewhere_in_the_chain() -> None:
    out = ok(None, tr(Step.RETURN, T0, txn="RMA-1"))
    assert out.note_code == "unverified_return" and "flagged for HQ" in (out.note or "")
    strict = Lifecycle(accept_unknown_customer_items=False)
    out = strict.apply(None, tr(Step.RETURN, T0))
    assert not out.accepted and "no sale" in (out.reason or "")


def test_repair_rejections() -> None:
    rejected(at_store(), tr(Step.REPAIR_OUT, T0 + 40), "in stock")
    rin = ok(at_store(), tr(Step.REPAIR_IN, T0 + 40)).state
    rejected(rin, tr(Step.REPAIR_IN, T0 + 41), "already in repair")
    strict = Lifecycle(accept_unknown_customer_items=False)
    assert not strict.apply(None, tr(Step.REPAIR_IN, T0)).accepted


def test_loan_rejections() -> None:
    rejected(at_store(), tr(Step.LOAN_OUT, T0 + 40), "no due date")
    rejected(at_store(), tr(Step.LOAN_OUT, T0 + 40, due=T0 + 39), "not after the loan")
    rejected(at_store(), tr(Step.LOAN_BACK, T0 + 40), "in stock")


def test_exit_of_a_sold_item_is_not_theft() -> None:
    rejected(sold(), tr(Step.EXIT_UNSOLD, T0 + 40), "free to leave")


def test_exit_of_a_lent_item_is_expected() -> None:
    lent = ok(at_store(), tr(Step.LOAN_OUT, T0 + 40, due=T0 + DAY)).state
    rejected(lent, tr(Step.EXIT_UNSOLD, T0 + 41), "expected to leave")


def test_exit_twice() -> None:
    gone = ok(at_store("floor"), tr(Step.EXIT_UNSOLD, T0 + 50)).state
    rejected(gone, tr(Step.EXIT_UNSOLD, T0 + 51), "already suspected stolen")


def test_destroying_a_customer_item() -> None:
    rejected(sold(), tr(Step.DESTROY, T0 + 40), "customer's item")
    rin = ok(sold(), tr(Step.REPAIR_IN, T0 + 40)).state
    rejected(rin, tr(Step.DESTROY, T0 + 41), "customer's item")


def test_decommission_rejections() -> None:
    rejected(None, tr(Step.DECOMMISSION, T0), "unknown item")
    killed = ok(at_store(), tr(Step.DECOMMISSION, T0 + 40)).state
    rejected(killed, tr(Step.DECOMMISSION, T0 + 41), "already decommissioned")
    rejected(killed, tr(Step.STOCK, T0 + 42), "decommissioned")


def test_count_rejections_flag_what_a_count_must_report() -> None:
    rejected(None, tr(Step.COUNT, T0), "unknown item")
    rejected(sold(), tr(Step.COUNT, T0 + 40), "found on site but sold in transaction R-17")
    s = ItemState.shipped_to(EPC, STORE, T0, shipment="D-4")
    rejected(s, tr(Step.COUNT, T0 + 1), "not received yet")
    rejected(at_store(), tr(Step.COUNT, T0 + 40, site=OTHER), "at site store-paris")


def test_state_of_another_item() -> None:
    other = ItemState.shipped_to("3034257BF7194E4000000001", STORE, T0)
    rejected(other, tr(Step.RECEIVE, T0 + 1), "another item")


def test_replaying_a_transition_gives_the_same_event_id() -> None:
    st = at_store("floor")
    a = only_event(ok(st, tr(Step.SELL, T0 + 30, txn="R-17")))
    b = only_event(ok(st, tr(Step.SELL, T0 + 31, txn="R-17")))
    assert a.event_id == b.event_id  # same receipt: HQ drops the duplicate
    c = only_event(ok(st, tr(Step.SELL, T0 + 30, txn="R-18")))
    assert c.event_id != a.event_id


def test_full_journey_workshop_to_customer_and_back() -> None:
    s = ok(None, tr(Step.COMMISSION, T0, site=WORKSHOP)).state
    s = ok(s, tr(Step.PACK, T0 + 1, site=WORKSHOP)).state
    s = ok(s, tr(Step.SHIP, T0 + 2, site=WORKSHOP, to_site=STORE, txn="D-1")).state
    s = ok(s, tr(Step.RECEIVE, T0 + DAY, txn="D-1")).state
    s = ok(s, tr(Step.COUNT, T0 + DAY + 1)).state
    s = ok(s, tr(Step.STOCK, T0 + DAY + 2)).state
    s = ok(s, tr(Step.SELL, T0 + 2 * DAY, txn="R-1")).state
    s = ok(s, tr(Step.REPAIR_IN, T0 + 30 * DAY, site=OTHER)).state
    assert s is not None and s.site == OTHER
    s = ok(s, tr(Step.REPAIR_OUT, T0 + 40 * DAY, site=OTHER)).state
    s = ok(s, tr(Step.RETURN, T0 + 41 * DAY, site=OTHER, txn="RMA-1")).state
    assert s is not None and (s.status, s.site) == (Status.RETURNED, OTHER)


def test_the_till_sells_an_item_not_on_record_and_a_strict_site_refuses() -> None:
    tr = Transition(Step.SELL, "3034E57E04001940000003E8", 1000.0, "st",
                    "urn:epc:id:sgln:0614141.00002.0", txn="R-1")
    out = Lifecycle().apply(None, tr)
    assert out.accepted and out.state is not None and out.state.status is Status.SOLD
    assert out.note is not None and "no receipt" in out.note
    assert [e.biz_step for e in out.events] == ["retail_selling"]
    strict = Lifecycle(sell_unrecorded_items=False).apply(None, tr)
    assert not strict.accepted and "unknown item" in (strict.reason or "")
