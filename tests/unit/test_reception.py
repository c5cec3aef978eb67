"""Reception reports name exactly the planted discrepancies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from inventory.asn import Asn
from inventory.catalog import Catalog, Product
from inventory.epc import sgtin96_hex
from inventory.reception import ReceptionSession, SessionClosedError

G1 = "80614141123458"
G2 = "06291041500213"
G3 = "00000096385074"
SHIPPED = datetime(2024, 5, 1, tzinfo=UTC)


def epcs(gtin: str, serials: range) -> list[str]:
    return [sgtin96_hex(gtin, s, 7 if gtin != G3 else 8) for s in serials]


GTIN_OF: dict[str, str] = {}
for g in (G1, G2, G3):
    for e in epcs(g, range(1, 30)):
        GTIN_OF[e] = g
FOREIGN = "E2801160600002054C1D1234"

CATALOG = Catalog(
    [
        Product(G1, "SC-1", "Silk scarf", "U", "navy", "scarves", Decimal("450"), "EUR"),
        Product(G2, "TO-1", "Tote", "M", "black", "bags", Decimal("1200"), "EUR"),
    ]
)


def asn(asn_id: str, items: list[str], qty: tuple[tuple[str, int], ...] = ()) -> Asn:
    return Asn(asn_id, "WH", "STORE", SHIPPED, tuple(sorted(items)), qty)


def session(*asns: Asn) -> ReceptionSession:
    return ReceptionSession(
        list(asns), gtin_of=GTIN_OF.get, catalog=CATALOG, session_id="R1", site="STORE",
        opened_at=100.0,
    )


def test_planted_discrepancies_are_named_exactly() -> None:
    listed = epcs(G1, range(1, 11)) + epcs(G2, range(1, 6))
    s = session(asn("A1", listed))
    missing = {listed[0], listed[12]}
    extra_same_gtin = epcs(G1, range(20, 21))
    extra_other = epcs(G3, range(1, 3))
    reads = [e for e in listed if e not in missing] + extra_same_gtin + extra_other + [FOREIGN]
    s.observe(reads[:7], at=101.0)
    s.observe(reads[5:] + reads[:3], at=102.0)  # overlap and repeats are harmless
    rep = s.close(at=110.0)
    assert set(rep.missing) == missing
    assert set(rep.unexpected) == set(extra_same_gtin + extra_other + [FOREIGN])
    assert set(rep.received) == set(listed) - missing
    assert rep.received_by_quantity == ()
    assert rep.unidentified == 1
    lines = {ln.gtin: ln for ln in rep.lines}
    # G1: 10 listed, 9 listed read + 1 unlisted serial of the same GTIN: per serial, the
    # listed one is short and the other unexpected (the row does not net them out).
    g1 = lines[G1]
    assert (g1.expected, g1.received, g1.over, g1.short) == (10, 9, 0, 1)
    assert (lines[G1].missing, lines[G1].unexpected) == (1, 1)
    assert (lines[G2].expected, lines[G2].received, lines[G2].short) == (5, 4, 1)
    assert (lines[G3].expected, lines[G3].received, lines[G3].unexpected) == (0, 0, 2)
    assert lines[G1].name == "Silk scarf" and lines[G3].name is None
    assert (g1.size, g1.colour) == ("U", "navy") and lines[G3].colour is None
    # The per-product figures add up to the header.
    assert sum(ln.received for ln in rep.lines) == rep.received_total
    assert sum(ln.short for ln in rep.lines) == len(rep.missing)
    assert rep.totals() == {
        "expected": 15,
        "received": 13,
        "received_listed": 13,
        "received_by_quantity": 0,
        "missing": 2,
        "unexpected": 4,
        "unidentified": 1,
        "over": 0,
        "short": 2,
    }
    assert not rep.complete
    assert rep.closed_at == 110.0
    assert s.first_seen(reads[0]) == 101.0
    assert any("not in the catalog" in w for w in rep.warnings)


def test_complete_reception() -> None:
    listed = epcs(G1, range(1, 4))
    s = session(asn("A1", listed))
    s.observe(reversed(listed))
    rep = s.close()
    assert rep.complete and rep.missing == () and rep.unexpected == ()
    assert rep.received == tuple(sorted(listed))


def test_gtin_quantity_asn_counts_by_gtin() -> None:
    s = session(asn("Q1", [], ((G1, 3), (G2, 2))))
    s.observe(epcs(G1, range(1, 6)) + epcs(G2, range(1, 2)) + epcs(G3, range(1, 2)))
    rep = s.close()
    lines = {ln.gtin: ln for ln in rep.lines}
    assert (lines[G1].expected, lines[G1].received, lines[G1].over) == (3, 5, 2)
    assert (lines[G2].expected, lines[G2].received, lines[G2].short) == (2, 1, 1)
    assert len(rep.received_by_quantity) == 6
    assert rep.unexpected == tuple(epcs(G3, range(1, 2)))
    assert rep.missing == ()
    by_qty = sorted(epcs(G1, range(1, 6)) + epcs(G2, range(1, 2)))
    assert s.received_by_asn() == {"Q1": tuple(by_qty)}


def test_several_asns_attribute_items_to_their_asn() -> None:
    a = asn("A", epcs(G1, range(1, 3)))
    b = asn("B", epcs(G2, range(1, 3)) + epcs(G1, range(2, 3)))
    s = session(a, b)
    s.observe(epcs(G1, range(1, 3)) + epcs(G2, range(2, 3)))
    by = s.received_by_asn()
    assert by == {"A": tuple(sorted(epcs(G1, range(1, 3)))), "B": tuple(epcs(G2, range(2, 3)))}
    rep = s.report()
    assert any("is on ASN A and B" in w for w in rep.warnings)
    assert rep.missing == tuple(epcs(G2, range(1, 2)))
    assert rep.asn_by_epc[epcs(G2, range(1, 2))[0]] == "B"


def test_closed_session_rejects_reads_and_report_is_stable() -> None:
    s = session(asn("A1", epcs(G1, range(1, 3))))
    s.observe(epcs(G1, range(1, 2)))
    first = s.close(at=5.0)
    with pytest.raises(SessionClosedError):
        s.observe(epcs(G1, range(2, 3)))
    again = s.close(at=9.0)
    assert again.closed_at == 5.0
    assert json.dumps(first.to_dict()) == json.dumps(again.to_dict())


def test_progress_counts_listed_items() -> None:
    s = session(asn("A1", epcs(G1, range(1, 5)), ((G2, 2),)))
    assert s.progress() == {"expected": 6, "received_listed": 0, "read": 0}
    s.observe(epcs(G1, range(1, 3)) + epcs(G1, range(1, 3)) + [FOREIGN])
    assert s.progress() == {"expected": 6, "received_listed": 2, "read": 3}


def test_report_dict_shape_and_destination_warning() -> None:
    s = ReceptionSession(
        Asn("A9", "WH", "ELSEWHERE", SHIPPED, tuple(epcs(G1, range(1, 2))), ()),
        gtin_of=GTIN_OF.get, site="STORE", session_id="R9", opened_at=1.0,
    )
    d = s.close(at=2.0).to_dict()
    assert d["type"] == "reception" and d["asn_ids"] == ["A9"]
    assert d["missing"] == [{"epc": epcs(G1, range(1, 2))[0], "gtin": G1, "asn_id": "A9"}]
    assert d["lines"][0] == {
        "gtin": G1, "name": None, "sku": None, "expected": 1, "received": 0, "over": 0,
        "short": 1, "missing": 1, "unexpected": 0, "size": None, "colour": None,
    }
    assert any("ELSEWHERE" in w for w in d["warnings"])
    json.dumps(d)


def test_session_needs_an_asn() -> None:
    with pytest.raises(ValueError, match="at least one ASN"):
        ReceptionSession([], gtin_of=GTIN_OF.get)
