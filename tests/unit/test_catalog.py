"""Catalog import: every bad row reported with where and why, good rows kept."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from inventory.catalog import (
    Catalog,
    GtinError,
    Product,
    gtin_check_digit,
    is_valid_gtin,
    normalize_gtin,
    parse_catalog_csv,
    parse_catalog_json,
    parse_catalog_records,
)

HEADER = "gtin,sku,name,size,colour,category,price,currency\n"


def test_check_digit_of_gs1_examples() -> None:
    # GS1's own GTIN-13 example and the GTIN-14 of the TDS worked example.
    assert gtin_check_digit("629104150021") == 3
    assert is_valid_gtin("6291041500213")
    assert is_valid_gtin("80614141123458")
    assert not is_valid_gtin("80614141123459")
    assert normalize_gtin("6291041500213") == "06291041500213"
    assert normalize_gtin(" 96385074 ") == "00000096385074"


@pytest.mark.parametrize("bad", ["", "abc", "123", "80614141123459", "\uff180614141123458"])
def test_bad_gtins_raise_with_value(bad: str) -> None:
    with pytest.raises(GtinError, match="GTIN"):
        normalize_gtin(bad)


def test_csv_good_rows_kept_bad_rows_reported_with_line_and_field() -> None:
    text = (
        HEADER
        + "80614141123458,SKU-1,Silk scarf,U,navy,scarves,450.00,EUR\n"
        + "80614141123459,SKU-2,Bad gtin,U,red,scarves,10,EUR\n"
        + "06291041500213,SKU-3,Tote,,black,bags,-5,EUR\n"
        + '00000096385074,SKU-4,"Belt, leather",90,brown,belts,320.5,eur\n'
        + "00000096385074,SKU-5,Dup,90,brown,belts,1,EUR\n"
        + "06291041500213,,Tote,M,black,bags,12,EURO\n"
        + "\n"
        + "1,2,3\n"
    )
    res = parse_catalog_csv(text, "cat.csv")
    assert [p.sku for p in res.products] == ["SKU-1", "SKU-4"]
    belt = res.products[1]
    assert belt.name == "Belt, leather"
    assert belt.price == Decimal("320.5")
    assert belt.currency == "EUR"
    assert belt.gtin14 == "00000096385074"
    where = {(e.line, e.field) for e in res.errors}
    assert where == {
        (3, "gtin"),
        (4, "price"),
        (7, "sku"),
        (7, "currency"),
        (9, None),
        (6, "gtin"),
    }
    assert all(str(e).startswith("cat.csv:") for e in res.errors)
    assert "check digit" in next(e.message for e in res.errors if e.line == 3)
    assert "duplicate" in next(e.message for e in res.errors if e.line == 6)


def test_csv_missing_required_column_is_fatal_and_named() -> None:
    res = parse_catalog_csv("gtin,sku,name\n80614141123458,a,b\n", "c.csv")
    assert res.products == ()
    assert {e.field for e in res.errors} == {"price", "currency"}


def test_csv_unknown_column_reported_but_rows_imported() -> None:
    res = parse_catalog_csv(
        "gtin,sku,name,price,currency,colur\n80614141123458,a,b,1,EUR,red\n", "c.csv"
    )
    assert len(res.products) == 1
    assert res.products[0].colour == ""
    assert [(e.line, e.field) for e in res.errors] == [(1, "colur")]


def test_csv_empty_file() -> None:
    res = parse_catalog_csv("", "e.csv")
    assert not res.ok and res.products == ()


def test_json_errors_name_the_line_of_the_record() -> None:
    text = """[
  {"gtin": "80614141123458", "sku": "S1", "name": "Scarf", "size": "U", "colour": "navy",
   "category": "scarves", "price": 450.10, "currency": "EUR"},
  {"gtin": "80614141123459", "sku": "S2", "name": "X", "price": "1", "currency": "EUR"},
  42,
  {"gtin": "06291041500213", "sku": "S3", "name": "Tote", "price": "12.00",
   "currency": "EUR", "flavour": "mint"}
]"""
    res = parse_catalog_json(text, "cat.json")
    assert [p.sku for p in res.products] == ["S1", "S3"]
    assert res.products[0].price == Decimal("450.10")
    assert {(e.line, e.record, e.field) for e in res.errors} == {
        (4, 1, "gtin"),
        (5, 2, None),
        (6, 3, "flavour"),
    }


def test_json_malformed_reports_position() -> None:
    res = parse_catalog_json('[{"gtin": "80614141123458",\n  "sku": }]', "bad.json")
    assert res.products == ()
    assert "line 2" in res.errors[0].message


def test_json_not_an_array() -> None:
    res = parse_catalog_json(b'{"gtin": "1"}', "obj.json")
    assert not res.ok and "array" in res.errors[0].message


def test_records_from_mqtt_payload_accept_float_price_exactly() -> None:
    payload = json.loads(
        '[{"gtin":"80614141123458","sku":"S","name":"N","price":19.99,"currency":"CHF"}]'
    )
    res = parse_catalog_records(payload, "mqtt")
    assert res.ok
    assert res.products[0].price == Decimal("19.99")


def test_catalog_upsert_counts_added_and_changed() -> None:
    p = Product("80614141123458", "S", "N", "", "", "", Decimal(1), "EUR")
    cat = Catalog([p])
    assert cat.upsert([p]) == (0, 0)
    p2 = Product("80614141123458", "S", "N2", "", "", "", Decimal(1), "EUR")
    q = Product("06291041500213", "T", "Tote", "", "", "", Decimal(2), "EUR")
    assert cat.upsert([p2, q]) == (1, 1)
    assert cat["80614141123458"].name == "N2"
    assert len(cat) == 2 and "06291041500213" in cat
