"""The benchmark's generated data is valid and its planted discrepancies are found (small sizes)."""

from __future__ import annotations

from inventory.bench import format_figures, generate_epcs, run, run_count, run_reception
from inventory.catalog import is_valid_gtin
from inventory.epc import sgtin96_hex


def test_generated_epcs_are_real_sgtin96() -> None:
    epcs, gtin_of = generate_epcs(50, 7)
    assert len(set(epcs)) == 50
    e = epcs[10]
    g = gtin_of[e]
    assert is_valid_gtin(g)
    # Item 10 of 7 GTINs: GTIN index 3, serial 1 + 10 // 7 = 2.
    assert e == sgtin96_hex(g, 2, 7)


def test_small_runs_find_what_was_planted() -> None:
    c = run_count(3000, missing_rate=0.05, misplaced_rate=0.05, unexpected=9)
    assert c.ok
    t = c.details["totals"]
    assert t["unexpected"] == 9 and t["missing"] > 0 and t["misplaced"] > 0
    assert t["found"] + t["missing"] + t["misplaced"] == 3000
    assert set(c.seconds) == {"load_book", "ingest_reads", "reconcile", "report", "total"}
    r = run_reception(400, missing=3, unexpected=2)
    assert r.ok and r.details["totals"]["missing"] == 3
    figs = run(sizes=(600,), asn_items=100)
    assert [f.name for f in figs] == ["count_600", "reception_100"]
    assert "count_600" in format_figures(figs)
