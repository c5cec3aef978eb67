"""`rfidd ops reception` per-product table: the figures of the report itself, with the
colour that tells two variants of one name apart, and the unexpected serial in its column."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from rich.console import Console

from inventory.asn import Asn
from inventory.catalog import Catalog, Product
from inventory.epc import sgtin96_hex
from inventory.reception import ReceptionSession
from rfidd.ops.cli import print_reception

BLACK, TAN = "03760001001013", "03760001001020"


def test_table_adds_up_to_the_header_and_names_the_colour() -> None:
    listed = [sgtin96_hex(BLACK, 1, 7), sgtin96_hex(TAN, 1, 7)]
    wrong = sgtin96_hex(TAN, 2, 7)  # the right GTIN, not the serial on the ASN
    gtin = {e: (BLACK if e == listed[0] else TAN) for e in [*listed, wrong]}
    cat = Catalog([Product(BLACK, "BAG-1", "Sac", "", "noir", "bags", Decimal("1"), "EUR"),
                   Product(TAN, "BAG-2", "Sac", "", "caramel", "bags", Decimal("1"), "EUR")])
    shipped = datetime(2026, 12, 2, tzinfo=UTC)
    s = ReceptionSession([Asn("A1", "WH", "S", shipped, tuple(sorted(listed)), ())],
                         gtin_of=gtin.get, catalog=cat, session_id="R1", site="S")
    s.observe([listed[0], wrong])
    con = Console(record=True, width=200)
    print_reception(s.close().to_dict(), con)
    out = con.export_text()
    assert "received 1, missing 1, unexpected 1" in out
    rows = {ln.split("│")[3].strip(): [c.strip() for c in ln.split("│")[4:9]]
            for ln in out.splitlines() if ln.count("│") > 8 and "0376" in ln}
    assert rows == {"Sac · noir": ["1", "1", "0", "0", "0"],
                    "Sac · caramel": ["1", "0", "0", "1", "1"]}
