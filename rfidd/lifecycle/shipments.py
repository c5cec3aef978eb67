"""Inbound shipments: an ASN addressed to this site books its items as in transit here, so
receiving them is allowed and receiving others is not (callers hold the domain lock)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inventory.asn import parse_asn_object
from inventory.events import ItemEvent
from inventory.lifecycle import ItemState, Status
from rfidd.context import ServiceContext
from rfidd.lifecycle.books import Books
from rfidd.lifecycle.results import ApplyResult, ItemResult


def announce_shipment(ctx: ServiceContext, books: Books, data: Any, source: str = "mqtt"
                  ) -> ApplyResult:
    """An ASN addressed to this site (HQ relays it to cmd/shipment): its items are booked
    as in transit here, so receiving them is allowed and receiving others is not."""
    site = ctx.config.site.id
    if not isinstance(data, dict):
        raise ValueError("command shipment: payload must be an ASN JSON object")
    parsed = parse_asn_object(data, source=f"shipment ({source})")
    if not parsed.ok:
        raise ValueError("command shipment: " + "; ".join(
            f"{e.field or 'ASN'}: {e.message}" for e in parsed.errors[:20]))
    asn = parsed.asns[0]
    if asn.destination != site:
        raise ValueError(f"command shipment: destination: ASN {asn.asn_id} is for "
                         f"{asn.destination!r}, this site is {site!r}")
    result = ApplyResult("shipment", asn.asn_id)
    at = asn.shipped_at.timestamp()
    with ctx.transaction() as s:
        states, _ = books.load(s, asn.epcs)
        booked: dict[str, ItemState] = {}
        for epc in asn.epcs:
            st = states.get(epc)
            if st is not None and st.status is Status.IN_TRANSIT and \
                    st.destination == site and st.shipment == asn.asn_id:
                result.items.append(ItemResult(epc, "duplicate"))
                continue
            if st is not None and st.site == site and st.status not in (
                    Status.SOLD, Status.MISSING, Status.IN_TRANSIT):
                result.items.append(ItemResult(
                    epc, "accepted", note=f"already here ({st.status.value}): not booked"))
                continue
            booked[epc] = replace(
                ItemState.shipped_to(epc, site, at, asn.asn_id),
                site=st.site if st is not None else asn.origin)
            result.items.append(ItemResult(epc, "accepted"))
        # The commissioning binding travels with the ASN: a return here checks the chip.
        books.commit(s, booked, (), (), (), tids=dict(asn.tids))
    return result


def all_or_nothing(result: ApplyResult, done: dict[str, str],
                   new_states: dict[str, ItemState], events: list[ItemEvent]) -> bool:
    """An ASN lists exactly what left: a shipment with a rejected item, or one reusing a
    shipped ASN id for other items, ships nothing. True for a reused ASN id (the items' own
    states were fine: the caller counts one exception for the shipment)."""
    rejected = result.rejected
    conflict = bool(done) and bool(new_states)
    if not new_states or (not rejected and not conflict):
        return False
    why = (f"ASN {result.txn} was already shipped with other items; use a new ASN id"
           if conflict else
           f"shipment {result.txn} not sent: {rejected} item(s) rejected")
    code = "shipment_conflict" if conflict else "shipment_incomplete"
    for r in result.items:
        if r.result == "accepted":
            r.result, r.reason, r.reason_code, r.event_ids = "rejected", why, code, []
    new_states.clear()
    events.clear()
    return conflict
