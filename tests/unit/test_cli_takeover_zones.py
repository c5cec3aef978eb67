"""A take-over's report, per zone: the pieces it put on the books are "taken over", not
"unexpected" (the headline said 11 put on the books while the table said 11 unexpected)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from rfidd.ops.cli_counts import print_count


def _zone(found: int, unexpected: int) -> dict[str, int]:
    return {"expected": 0, "found": found, "missing": 0, "misplaced_out": 0, "misplaced_in": 0,
            "unexpected": unexpected}


def test_takeover_per_zone_table_counts_taken_over_apart() -> None:
    taken = [f"E{i}" for i in range(4)]
    doc: dict[str, Any] = {
        "session_id": "cnt-1", "zones": ["floor", "stockroom"], "adopt": True,
        "totals": {"expected": 0, "found": 0, "missing": 0, "misplaced": 0, "unexpected": 5},
        "accuracy": {"item": None, "record": None, "aggregate": None},
        "per_zone": {"floor": _zone(0, 3), "stockroom": _zone(0, 2)},
        "missing": [], "misplaced": [],
        "unexpected": [{"epc": e, "zone": z} for e, z in
                       (("E0", "floor"), ("E1", "floor"), ("E2", "stockroom"),
                        ("E3", "stockroom"), ("X9", "floor"))],  # X9: seen, not taken over
        "books": {"taken_over": taken},
    }
    con = Console(record=True, width=200)
    print_count(doc, con)
    rows = {c[0]: c[1:] for c in ([x.strip() for x in ln.split("│")[1:-1]]
                                  for ln in con.export_text().splitlines() if ln.count("│") > 7)}
    assert rows["floor"] == ["0", "0", "0", "0", "0", "1", "2"], rows
    assert rows["stockroom"] == ["0", "0", "0", "0", "0", "0", "2"], rows
