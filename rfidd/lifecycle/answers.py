"""The answers of the lifecycle and alert routes (see rfidd.web.answers: the services' dicts
as they are, documented for integrators)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rfidd.web.answers import Answer


class ItemResultAnswer(Answer):
    epc: str = Field(description="The item (EPC, hex).")
    result: str = Field(description="accepted, duplicate or rejected.")
    reason: str | None = Field(None, description="Why it was rejected, in words.")
    reason_code: str | None = Field(None, description="The rejection's stable code.")
    note: str | None = Field(None, description="A remark on an accepted item.")
    note_code: str | None = Field(None, description="The remark's stable code.")
    state: str | None = Field(None, description="The item's state after the command.")
    event_ids: list[str] | None = Field(None, description="EPCIS events the command recorded.")


class CommandResult(Answer):
    command: str = Field(description="The command applied (sale, return, hold...).")
    txn: str | None = Field(description="Its business transaction (receipt, RMA, ASN...).")
    accepted: int = Field(description="Items applied.")
    duplicates: int = Field(description="Items already in that state by this command.")
    rejected: int = Field(description="Items refused (the answer is then a 409).")
    items: list[ItemResultAnswer] = Field(description="Each item's result.")
    asn: dict[str, Any] | None = Field(None, description="The ASN a shipment produced.")


class HoldAnswer(Answer):
    client: str | None = Field(description="The client it is held for (opaque reference).")
    staff: str | None = Field(description="Who put it on hold.")
    until: str | None = Field(description="Hold ends (ISO 8601, UTC).")
    for_site: str | None = Field(description="The site it is held for, if another.")


class ItemState(Answer):
    epc: str = Field(description="EPC, hex.")
    status: str = Field(description="Lifecycle state: in_stock, sold, on_loan, held...")
    disposition: str | None = Field(description="CBV disposition.")
    site: str | None = Field(description="Where the books place it.")
    since: str | None = Field(description="In this state since (ISO 8601, UTC).")
    biz_step: str | None = Field(description="The CBV business step that put it there.")
    destination: str | None = Field(description="Where it is going (shipments, transfers).")
    shipment: str | None = Field(description="The shipment carrying it.")
    sale_txn: str | None = Field(description="The sale's receipt, once sold.")
    loan_due: str | None = Field(description="A loan's due date (ISO 8601, UTC).")
    hold: HoldAnswer | None = Field(description="The client hold, if held.")
    home_zone: str | None = Field(description="Its usual zone.")
    tid: str | None = Field(description="The tag's TID, when commissioned here.")


class TraceEntryAnswer(Answer):
    event_time: float = Field(description="When (epoch s).")
    time: str = Field(description="EPCIS eventTime (ISO 8601, UTC).")
    offset: str | None = Field(description="The site's UTC offset at the time.")
    type: str = Field(description="EPCIS event type.")
    action: str | None = Field(description="ADD, OBSERVE or DELETE.")
    biz_step: str | None = Field(description="CBV business step.")
    disposition: str | None = Field(description="CBV disposition.")
    read_point: str | None = Field(description="Reader and antenna (SGLN extension).")
    zone: str | None = Field(description="The zone.")
    biz_transactions: list[str] = Field(description="Receipts, ASNs, RMAs it belongs to.")
    parent: str | None = Field(description="The parent (aggregation), if any.")
    event_id: str = Field(description="The event's stable eventID.")


class ItemHistory(Answer):
    state: ItemState | None = Field(description="Where the books stand (null: never booked).")
    history: list[TraceEntryAnswer] = Field(description="Events naming it, oldest first.")


class CommissioningSession(Answer):
    id: str = Field(description="The session's id.")
    gtin: str = Field(description="The product being tagged.")
    expected: int | None = Field(description="Tags to encode.")
    commissioned: int = Field(description="Tags encoded so far.")
    zone: str | None = Field(description="The bench zone.")
    opened_at: str | None = Field(description="When (ISO 8601, UTC).")
    closed_at: str | None = Field(description="When it closed (null: open).")


class CommissioningSessions(Answer):
    sessions: list[CommissioningSession] = Field(description="Open sessions (all with ?all).")


class Bind(Answer):
    epc: str = Field(description="The EPC bound.")
    session: str = Field(description="The commissioning session (or 'bind').")
    tid: str | None = Field(description="The tag's TID.")


class OverdueAnswer(Answer):
    new_alerts: int = Field(description="Alerts raised now for overdue loans and expired holds.")


class AlertAnswer(Answer):
    alert_id: str = Field(description="The alert's id.")
    type: str = Field(description="exit_unsold, return_refused... ('alert_update' in the "
                                  "answer to a step, with the kind in alert_type).")
    epc: str = Field(description="The item.")
    zone: str | None = Field(description="Where it was raised.")
    home_zone: str | None = Field(description="The item's zone before (exit alerts).")
    raised_at: str | None = Field(description="When (ISO 8601, UTC).")
    state: str = Field(description="open, acknowledged or resolved.")
    acknowledged_by: str | None = Field(description="Who acknowledged it.")
    acknowledged_at: str | None = Field(description="When.")
    acknowledged_note: str | None = Field(description="Their note.")
    resolution: str | None = Field(description="false_alarm, recovered, confirmed_loss...")
    resolved_by: str | None = Field(description="Who resolved it.")
    resolved_at: str | None = Field(description="When.")
    resolved_note: str | None = Field(description="Their note.")
    detail: Any = Field(None, description="What raised it (its own fields).")
    duplicate: bool | None = Field(None, description="The step was already done (answers to "
                                                     "acknowledge and resolve).")
    alert_type: str | None = Field(None, description="The alert's kind (answers to a step).")
    site: str | None = Field(None, description="The site (answers to a step).")
    books: dict[str, Any] | None = Field(None, description="A cleared loss put back in stock.")


class AlertList(Answer):
    alerts: list[AlertAnswer] = Field(description="Alerts, newest first (at most 200).")
