"""Count, shrinkage and replenishment tables (inventory.reports)."""

from __future__ import annotations

import csv
import io
import json

from inventory.counting import CountSession
from inventory.reports import (
    count_csv,
    count_item_rows,
    count_record_rows,
    count_zone_rows,
    to_json,
)


def E(n: int) -> str:
    return f"3034257BF40C0E40{n:08X}"


def test_count_tables() -> None:
    book = {E(1): "stock", E(2): "stock", E(3): "floor"}
    s = CountSession(["stock", "floor"], book, record_of={E(1): "A", E(2): "A", E(3): "B",
                                                          E(9): "B"}, session_id="C")
    s.observe_many([(E(1), "stock"), (E(3), "stock"), (E(9), "floor")])
    r = s.finish(at=3.0)
    rows = list(csv.reader(io.StringIO(count_csv(r))))
    assert rows == [
        ["status", "epc", "booked_zone", "seen_zone"],
        ["missing", E(2), "stock", ""],
        ["misplaced", E(3), "floor", "stock"],
        ["unexpected", E(9), "", "floor"],
    ]
    assert count_zone_rows(r)[1] == [["floor", 1, 0, 0, 1, 0, 1], ["stock", 2, 1, 1, 0, 1, 0]]
    assert count_record_rows(r)[1] == [["A", "stock", 2, 1, -1], ["B", "stock", 0, 1, 1]]
    # B on the floor: booked 1 (E3), counted 1 (E9 unexpected): right by luck.
    assert len(count_record_rows(r, discrepant_only=False)[1]) == 3
    assert len(count_item_rows(r)[1]) == 3
    doc = json.loads(to_json(r))
    assert doc["type"] == "count" and doc["totals"]["misplaced"] == 1
