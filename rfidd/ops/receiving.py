"""What closing a reception writes, planned once (rfidd/ops/reception.py): the receiving
events and items rows per item, the clones found, the report; and the report's CSV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inventory.events import ItemEvent
from inventory.reception import ReceptionReport
from inventory.reports import to_csv
from rfidd.store import repo


@dataclass
class ReceptionClose:
    """A reception's close, planned once, written chunk by chunk then the report."""

    now: float
    report: ReceptionReport
    doc: dict[str, Any]
    items: list[tuple[Sequence[ItemEvent], repo.ItemUpsert]]  # per item received
    clones: list[repo.Message]
    alerts: list[CloneAlert]
    done: int = 0  # items committed


@dataclass(frozen=True, slots=True)
class CloneAlert:
    """A cloned tag found at reception, for the site's alert workflow (id = the HQ alert's)."""

    alert_id: str
    epc: str
    zone: str | None
    detail: dict[str, Any]


def lines_csv(doc: Mapping[str, Any]) -> str:
    header = ["gtin", "sku", "name", "expected", "received", "over", "short", "missing",
              "unexpected"]
    rows: list[list[Any]] = [[ln.get(h) for h in header] for ln in doc.get("lines", [])]
    return to_csv((header, rows))


__all__ = ["CloneAlert", "ReceptionClose", "lines_csv"]
