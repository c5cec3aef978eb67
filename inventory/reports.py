"""Rendering of report objects: JSON documents for MQTT/API and CSV tables for people.

The row functions return (header, rows) so the daemon's terminal view (rich) and the CSV files
show the same columns. Text cells that a spreadsheet would run as a formula are quoted with a
leading apostrophe: product names come from outside and a CSV is opened in Excel.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Protocol

from inventory.counting import CountResult
from inventory.reception import ReceptionReport
from inventory.replenishment import ReplenishmentLine
from inventory.shrinkage import ShrinkageReport

Cell = str | int | float | Decimal | None
Table = tuple[list[str], list[list[Cell]]]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class SupportsToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def _default(o: object) -> object:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def to_json(report: SupportsToDict | dict[str, Any], *, indent: int | None = None) -> str:
    """The report's JSON document (UTF-8 text, keys in document order)."""
    doc = report if isinstance(report, dict) else report.to_dict()
    return json.dumps(doc, ensure_ascii=False, indent=indent, default=_default,
                      separators=(",", ":") if indent is None else None)


def _cell(v: Cell) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return "'" + v if v.startswith(_FORMULA_START) else v
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def to_csv(table: Table) -> str:
    header, rows = table
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([_cell(c) for c in row] for row in rows)
    return buf.getvalue()


# -- reception ----------------------------------------------------------------------------------
def reception_gtin_rows(report: ReceptionReport) -> Table:
    header = ["gtin", "sku", "name", "expected", "received", "over", "short", "missing",
              "unexpected"]
    rows: list[list[Cell]] = [
        [ln.gtin, ln.sku, ln.name, ln.expected, ln.received, ln.over, ln.short, ln.missing,
         ln.unexpected]
        for ln in report.lines
    ]
    return header, rows


def reception_item_rows(report: ReceptionReport, include_received: bool = False) -> Table:
    """One row per discrepant item (missing, unexpected), optionally every received one too."""
    header = ["status", "epc", "gtin", "asn_id"]
    groups: list[tuple[str, Sequence[str]]] = [("missing", report.missing),
                                               ("unexpected", report.unexpected)]
    if include_received:
        groups += [("received", report.received),
                   ("received_by_quantity", report.received_by_quantity)]
    rows: list[list[Cell]] = [
        [status, e, report.gtin_by_epc.get(e), report.asn_by_epc.get(e)]
        for status, epcs in groups
        for e in epcs
    ]
    return header, rows


def reception_csv(report: ReceptionReport) -> str:
    return to_csv(reception_gtin_rows(report))


# -- count --------------------------------------------------------------------------------------
def count_zone_rows(result: CountResult) -> Table:
    header = ["zone", "expected", "found", "missing", "misplaced_out", "misplaced_in",
              "unexpected"]
    rows: list[list[Cell]] = [
        [z, t.expected, t.found, t.missing, t.misplaced_out, t.misplaced_in, t.unexpected]
        for z, t in sorted(result.per_zone.items())
    ]
    return header, rows


def count_item_rows(result: CountResult) -> Table:
    """The exceptions staff act on: one row per missing, misplaced, unexpected item."""
    header = ["status", "epc", "booked_zone", "seen_zone"]
    rows: list[list[Cell]] = []
    rows += [["missing", m.epc, m.booked_zone, None] for m in result.missing]
    rows += [["misplaced", m.epc, m.booked_zone, m.found_zone] for m in result.misplaced]
    rows += [["unexpected", u.epc, u.booked_zone, u.zone] for u in result.unexpected]
    rows += [["unidentified", e, None, None] for e in result.unidentified]
    return header, rows


def count_record_rows(result: CountResult, discrepant_only: bool = True) -> Table:
    header = ["record", "zone", "booked", "counted", "difference"]
    rows: list[list[Cell]] = [
        [r.record, r.zone, r.booked, r.counted, r.counted - r.booked]
        for r in result.records
        if not discrepant_only or r.booked != r.counted
    ]
    return header, rows


def count_csv(result: CountResult) -> str:
    return to_csv(count_item_rows(result))


# -- shrinkage and replenishment ----------------------------------------------------------------
def shrinkage_item_rows(report: ShrinkageReport) -> Table:
    header = ["epc", "status", "gtin", "sku", "category", "zone", "value", "confidence"]
    rows: list[list[Cell]] = [
        [i.epc, i.status, i.gtin, i.sku, i.category, i.zone, i.value, i.confidence]
        for i in report.items
    ]
    return header, rows


def shrinkage_breakdown_rows(report: ShrinkageReport, by: str = "category") -> Table:
    table = {"category": report.by_category, "sku": report.by_sku, "zone": report.by_zone}[by]
    header = [by, "items", "confirmed", "suspected", "value"]
    rows: list[list[Cell]] = [
        [k, b.items, b.confirmed, b.suspected, b.value] for k, b in sorted(table.items())
    ]
    return header, rows


def shrinkage_csv(report: ShrinkageReport) -> str:
    return to_csv(shrinkage_item_rows(report))


def replenishment_rows(lines: Iterable[ReplenishmentLine]) -> Table:
    header = ["category", "sku", "name", "size", "colour", "stock_qty", "floor_qty", "suggested"]
    rows: list[list[Cell]] = [
        [ln.category, ln.sku, ln.name, ln.size, ln.colour, ln.stock_qty, ln.floor_qty,
         ln.suggested]
        for ln in lines
    ]
    return header, rows


def replenishment_csv(lines: Iterable[ReplenishmentLine]) -> str:
    return to_csv(replenishment_rows(lines))
