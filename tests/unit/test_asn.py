"""ASN import: strict, all errors at once, idempotent by content hash."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from inventory.asn import (
    AsnBook,
    AsnOutcome,
    classify_import,
    normalize_epc_hex,
    parse_asn_csv,
    parse_asn_json,
    parse_asn_object,
)
from inventory.epc import sgtin96_hex

G1 = "80614141123458"
G2 = "06291041500213"
E1 = sgtin96_hex(G1, 1, 7)
E2 = sgtin96_hex(G1, 2, 7)
E3 = sgtin96_hex(G1, 3, 7)


def _json(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "asn_id": "DESADV-0001",
        "origin": "WH-PARIS",
        "destination": "STORE-042",
        "shipped_at": "2024-05-01T10:00:00+02:00",
        "epcs": [E2, E1.lower()],
        "lines": [{"gtin": G2, "quantity": 3}, {"gtin": "6291041500213", "quantity": "2"}],
    }
    doc.update(over)
    return doc


def test_json_asn_normalised() -> None:
    res = parse_asn_json(json.dumps(_json()), "a.json")
    assert res.ok, res.errors
    (asn,) = res.asns
    assert asn.asn_id == "DESADV-0001"
    assert asn.epcs == tuple(sorted([E1, E2]))
    assert asn.quantities == ((G2, 5),)
    assert asn.shipped_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert asn.expected_items == 7
    assert asn.to_dict()["shipped_at"] == "2024-05-01T08:00:00Z"


def test_same_content_differently_formatted_has_same_hash() -> None:
    a = parse_asn_json(json.dumps(_json())).asns[0]
    b = parse_asn_json(
        json.dumps(
            _json(
                epcs=[E1, E2],
                shipped_at="2024-05-01T08:00:00Z",
                lines=[{"gtin": G2, "quantity": 5}],
            )
        )
    ).asns[0]
    assert a.content_hash == b.content_hash
    c = parse_asn_json(json.dumps(_json(epcs=[E1, E3]))).asns[0]
    assert c.content_hash != a.content_hash


def test_book_detects_identical_and_conflict() -> None:
    book = AsnBook()
    a = parse_asn_json(json.dumps(_json())).asns[0]
    same = parse_asn_json(json.dumps(_json(epcs=[E1, E2]))).asns[0]
    other = parse_asn_json(json.dumps(_json(epcs=[E3]))).asns[0]
    assert book.add(a) is AsnOutcome.NEW
    assert book.add(same) is AsnOutcome.IDENTICAL
    assert book.add(other) is AsnOutcome.CONFLICT
    assert book.get("DESADV-0001") is a and len(book) == 1
    assert classify_import(None, a) is AsnOutcome.NEW
    assert classify_import(a.content_hash, same) is AsnOutcome.IDENTICAL
    assert classify_import(a.content_hash, other) is AsnOutcome.CONFLICT


def test_json_every_error_reported_and_asn_rejected() -> None:
    doc = _json(
        epcs=[E1, "XYZ", E1, 7],
        lines=[{"gtin": "123", "quantity": 0}, {"gtin": G2, "qty": 1}],
        shipped_at="2024-05-01T10:00:00",
        colour="red",
    )
    del doc["origin"]
    res = parse_asn_json(json.dumps(doc), "bad.json")
    assert res.asns == ()
    fields = {e.field for e in res.errors}
    assert fields == {
        "colour",
        "shipped_at",
        "epcs[1]",
        "epcs[2]",
        "epcs[3]",
        "lines[0].gtin",
        "lines[0].quantity",
        "lines[1].qty",
        "lines[1].quantity",
        "origin",
    }
    assert any("UTC offset" in e.message for e in res.errors)
    assert any("twice" in e.message for e in res.errors)


def test_json_array_of_asns_with_lines() -> None:
    text = "[\n" + json.dumps(_json()) + ",\n" + json.dumps(_json(asn_id="X2", epcs=["zz"])) + "]"
    res = parse_asn_json(text, "many.json")
    assert [a.asn_id for a in res.asns] == ["DESADV-0001"]
    assert [(e.line, e.record, e.field) for e in res.errors] == [(3, 1, "epcs[0]")]


def test_json_empty_asn_rejected() -> None:
    res = parse_asn_object(_json(epcs=[], lines=[]))
    assert not res.ok and "no EPCs" in res.errors[0].message


def test_json_syntax_error_has_line() -> None:
    res = parse_asn_json('{"asn_id": "A",\n"epcs": [}', "s.json")
    assert res.errors[0].line == 2


CSV_HEAD = "asn_id,origin,destination,shipped_at,epc,gtin,quantity\n"


def test_csv_asn_with_epcs_and_quantities() -> None:
    text = (
        CSV_HEAD
        + f"A1,WH,STORE,2024-05-01T08:00:00Z,{E1},,\n"
        + f",,,,{E2},,\n"
        + f"A1,,,,,{G2},4\n"
        + f"A2,WH,STORE,2024-05-02T08:00:00Z,{E3},,\n"
    )
    res = parse_asn_csv(text, "a.csv")
    assert res.ok, [str(e) for e in res.errors]
    a1, a2 = res.asns
    assert a1.epcs == tuple(sorted([E1, E2])) and a1.quantities == ((G2, 4),)
    assert a2.epcs == (E3,)
    # The CSV and JSON forms of the same content hash alike.
    j = parse_asn_object(
        {
            "asn_id": "A1",
            "origin": "WH",
            "destination": "STORE",
            "shipped_at": "2024-05-01T08:00:00Z",
            "epcs": [E1, E2],
            "lines": [{"gtin": G2, "quantity": 4}],
        }
    ).asns[0]
    assert j.content_hash == a1.content_hash


def test_csv_errors_name_line_and_field_and_reject_only_that_asn() -> None:
    text = (
        CSV_HEAD
        + f"A1,WH,STORE,2024-05-01T08:00:00Z,{E1},,\n"
        + f"A1,WH,OTHER,,{E2},,\n"
        + f"A1,,,,{E3},{G1},1\n"
        + "A1,,,,,,\n"
        + f"A1,,,,,{G1},-2\n"
        + f"A2,WH,STORE,2024-05-01T08:00:00Z,{E1},,\n"
    )
    res = parse_asn_csv(text, "a.csv")
    assert [a.asn_id for a in res.asns] == ["A2"]
    assert [(e.line, e.field) for e in res.errors] == [
        (3, "destination"),
        (4, "epc"),
        (5, "epc"),
        (6, "quantity"),
    ]
    assert str(res.errors[0]).startswith("a.csv:3 field 'destination'")


def test_csv_tid_column_binds_like_json_tids_and_errors_name_the_line() -> None:
    tid1, tid2 = "E2801160200000000000A001", "E2801160200000000000A002"
    head = "asn_id,origin,destination,shipped_at,epc,gtin,quantity,tid\n"
    text = (head
            + f"A1,WH,STORE,2024-05-01T08:00:00Z,{E1},,,{tid1.lower()}\n"
            + f",,,,{E2},,,\n"  # blank: nothing bound (stock from before the bindings)
            + f"A1,,,,,{G2},4,\n")
    res = parse_asn_csv(text, "t.csv")
    assert res.ok, [str(e) for e in res.errors]
    assert res.asns[0].tids == ((E1, tid1),)
    j = parse_asn_object({"asn_id": "A1", "origin": "WH", "destination": "STORE",
                          "shipped_at": "2024-05-01T08:00:00Z", "epcs": [E1, E2],
                          "lines": [{"gtin": G2, "quantity": 4}], "tids": {E1: tid1}})
    assert j.asns[0].content_hash == res.asns[0].content_hash
    bad = (head
           + f"A1,WH,STORE,2024-05-01T08:00:00Z,{E1},,,{tid1}\n"
           + f"A1,,,,{E2},,,E28011\n"  # too short
           + f"A1,,,,{E3},,,not-hex-at-all\n"
           + f"A1,,,,,{G2},4,{tid2}\n"  # a TID on a quantity row
           + f"A2,WH,STORE,2024-05-01T08:00:00Z,{E1},,,{tid2}\n")
    res = parse_asn_csv(bad, "t.csv")
    assert [a.asn_id for a in res.asns] == ["A2"] and res.asns[0].tids == ((E1, tid2),)
    assert [(e.line, e.field) for e in res.errors] == [(3, "tid"), (4, "tid"), (5, "tid")]
    assert str(res.errors[0]).startswith("t.csv:3 field 'tid'") and "E28011" in str(res.errors[0])
    assert "quantity row" not in str(res.errors[2]) and "EPC row" in str(res.errors[2])


def test_csv_bad_header() -> None:
    res = parse_asn_csv("asn_id,origin,shipped_at,sku\n", "h.csv")
    assert {e.field for e in res.errors} == {"sku", "destination", "epc"}


@pytest.mark.parametrize("value", ["", "12345", "GG" * 12, "urn:epc:id:sgtin:0614141.812345.6789"])
def test_bad_epc_hex(value: str) -> None:
    with pytest.raises(ValueError, match="EPC"):
        normalize_epc_hex(value)


def test_custom_epc_normaliser_for_uris() -> None:
    res = parse_asn_object(_json(epcs=["urn:x:1"], lines=[]), normalize_epc=lambda s: s.upper())
    assert res.asns[0].epcs == ("URN:X:1",)
