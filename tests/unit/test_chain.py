"""Chain-wide stock rules (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inventory.catalog import is_valid_gtin
from inventory.chain import gtin_of, in_stock, stock_by_site
from inventory.epc import decode, sgtin96_hex


def test_gtin_of_matches_the_tag_data_standard() -> None:
    hex_ = sgtin96_hex("03760001001013", 42, 7)
    uri = decode(hex_).uri
    assert uri is not None and gtin_of(uri) == "03760001001013"
    assert gtin_of("urn:epc:id:sgtin:0614141.812345.6789") == "80614141123458"  # TDS example
    assert gtin_of("urn:epc:id:sscc:0614141.1234567890") is None
    assert gtin_of("urn:epc:id:sgtin:0614141.12.1") is None  # not 13 digits


@given(st.integers(min_value=0, max_value=10**12 - 1), st.integers(0, 99999),
       st.integers(min_value=1, max_value=2**38 - 1))
def test_gtin_of_round_trips_any_sgtin(body: int, ref: int, serial: int) -> None:
    prefix = f"{body % 10**7:07d}"
    uri = f"urn:epc:id:sgtin:{prefix}.{ref % 10**6:06d}.{serial}"
    gtin = gtin_of(uri)
    assert gtin is not None and is_valid_gtin(gtin) and len(gtin) == 14


def test_stock_counts_only_what_is_in_stock_at_its_latest_site() -> None:
    a = "urn:epc:id:sgtin:0614141.812345.1"
    b = "urn:epc:id:sgtin:0614141.812345.2"
    c = "urn:epc:id:sgtin:0614141.812345.3"
    d = "urn:epc:id:sscc:0614141.1234567890"
    got = stock_by_site([(a, "paris", "sellable_accessible"),
                         (b, "paris", "urn:epcglobal:cbv:disp:sellable_not_accessible"),
                         (c, "lyon", "retail_sold"), (d, "paris", "sellable_accessible")])
    assert got == {("paris", "80614141123458"): 2}
    assert not in_stock("in_transit") and not in_stock(None) and in_stock("available")
