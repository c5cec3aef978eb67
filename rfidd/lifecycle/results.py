"""Answers of lifecycle commands: one result per item, and the bounded reason codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inventory.lifecycle import ItemState, Status, Step, Transition

REASONS = (
    "unknown_item",
    "not_shipped_here",
    "already_done",
    "wrong_site",
    "bad_request",
    "sold",
    "in_transit",
    "on_loan",
    "wrong_status",
    "wrong_product",
    "shipment_conflict",
    "shipment_incomplete",
    "held",
    "awaiting_collection",
    "present_unsold",
    "cloned_tag",
)
"""The bounded label values of rfidd_lifecycle_rejections_total{reason}."""



@dataclass(slots=True)
class ItemResult:
    epc: str
    result: str  # accepted | duplicate | rejected
    reason: str | None = None
    reason_code: str | None = None
    event_ids: list[str] = field(default_factory=list)
    note: str | None = None
    note_code: str | None = None
    state: str | None = None  # a rejected item's status (None: not on the books)
    tag_check: str | None = None  # the authenticity verdict at a return or repair
    tag_note: str | None = None  # why it proves nothing (no binding, no TID read...)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"epc": self.epc, "result": self.result}
        for k in ("reason", "reason_code", "note", "note_code", "state", "tag_check",
                  "tag_note"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.event_ids:
            d["event_ids"] = self.event_ids
        return d


@dataclass(slots=True)
class ApplyResult:
    command: str
    txn: str | None
    items: list[ItemResult] = field(default_factory=list)
    asn: dict[str, Any] | None = None

    def count(self, result: str) -> int:
        return sum(1 for i in self.items if i.result == result)

    @property
    def rejected(self) -> int:
        return self.count("rejected")

    def summary(self) -> str:
        s = (f"{self.command} {self.txn or ''}: {self.count('accepted')} accepted, "
             f"{self.count('duplicate')} duplicate, {self.rejected} rejected")
        first = next((i for i in self.items if i.result == "rejected"), None)
        return s + (f" (first: {first.reason})" if first else "")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "command": self.command,
            "txn": self.txn,
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.rejected,
            "items": [i.to_json() for i in self.items],
        }
        if self.asn is not None:
            d["asn"] = self.asn
        return d


def reason_code(state: ItemState | None, tr: Transition, text: str) -> str:
    """A rejection's bounded label (the text goes to the alert, never to the metric)."""
    why = text.split(": ", 1)[1] if ": " in text else text
    if why.startswith(("no sale transaction", "no due date", "due date", "no destination",
                       "destination is this site")):
        return "bad_request"
    if tr.step in (Step.RECEIVE, Step.TRANSFER_IN) and (
        state is None or (state.status is Status.IN_TRANSIT and state.destination != tr.site)
    ):
        return "not_shipped_here"
    if state is None:
        return "unknown_item"
    if why.startswith("already"):
        return "already_done"
    if state.status is Status.SOLD:
        return "sold"
    if state.status is Status.IN_TRANSIT:
        return "in_transit"
    if state.status is Status.ON_LOAN:
        return "on_loan"
    if state.status is Status.HELD:
        return "held"
    if state.status is Status.AWAITING_COLLECTION:
        return "awaiting_collection"
    if state.site is not None and state.site != tr.site:
        return "wrong_site"
    return "wrong_status"

