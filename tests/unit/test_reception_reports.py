"""JSON and CSV rendering of reception reports (inventory.reports)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

from inventory.asn import Asn
from inventory.catalog import Catalog, Product
from inventory.reception import ReceptionSession
from inventory.reports import (
    reception_csv,
    reception_gtin_rows,
    reception_item_rows,
    to_csv,
    to_json,
)

G1, G2 = "80614141123458", "06291041500213"


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


GTIN = {E(1): G1, E(2): G1, E(3): G2, E(4): G2}
CAT = Catalog([Product(G1, "SC-1", "=HYPERLINK(\"x\")", "U", "navy", "scarves", Decimal(1), "EUR")])


def report() -> ReceptionSession:
    asn = Asn("A1", "WH", "S", datetime(2024, 1, 1, tzinfo=UTC), (E(1), E(2), E(3)), ())
    s = ReceptionSession(asn, gtin_of=GTIN.get, catalog=CAT, session_id="R", opened_at=0.0)
    s.observe([E(1), E(3), E(4)], at=1.0)
    return s


def test_json_round_trip_matches_dict() -> None:
    rep = report().close(at=2.0)
    text = to_json(rep)
    assert json.loads(text) == json.loads(json.dumps(rep.to_dict()))
    assert "\n" not in text
    assert "\n" in to_json(rep, indent=2)
    assert json.loads(to_json({"price": Decimal("1.50")})) == {"price": "1.50"}


def test_gtin_csv_rows_and_formula_guard() -> None:
    rep = report().close(at=2.0)
    rows = list(csv.reader(io.StringIO(reception_csv(rep))))
    assert rows[0] == ["gtin", "sku", "name", "expected", "received", "over", "short", "missing",
                       "unexpected"]
    assert rows[1] == [G2, "", "", "1", "1", "0", "0", "0", "1"]  # per serial: E4 unexpected
    assert rows[2] == [G1, "SC-1", "'=HYPERLINK(\"x\")", "2", "1", "0", "1", "1", "0"]
    header, body = reception_gtin_rows(rep)
    assert len(body) == len(rep.lines) and header[0] == "gtin"


def test_item_rows() -> None:
    rep = report().close(at=2.0)
    header, rows = reception_item_rows(rep)
    assert header == ["status", "epc", "gtin", "asn_id"]
    assert rows == [["missing", E(2), G1, "A1"], ["unexpected", E(4), G2, None]]
    _, all_rows = reception_item_rows(rep, include_received=True)
    assert [r[0] for r in all_rows] == ["missing", "unexpected", "received", "received"]
    assert to_csv((header, rows)).splitlines()[2] == f"unexpected,{E(4)},{G2},"
