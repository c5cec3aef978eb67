"""EPC decoding against the GS1 TDS vectors, garbage from the air, and classification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.epc import (
    DecodedEpc,
    EpcClass,
    EpcClassifier,
    EpcStatus,
    decode,
    decode_cache_clear,
    decode_cache_info,
    sgtin96_hex,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "data" / "tds-vectors.json").read_text()
)["vectors"]


def gs1_check_digit(digits: str) -> str:
    """GS1 mod-10 check digit (weights 3,1,3... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["note"] for v in VECTORS])
def test_tds_vectors(vector: dict[str, Any]) -> None:
    d = decode(vector["hex"])
    assert d.status is EpcStatus.OK, d.error
    assert d.error is None
    assert d.scheme == vector["scheme"].lower()
    assert d.uri == vector["epc_uri"]
    assert d.hex == vector["hex"]
    assert d.gtin14 == vector.get("gtin14")
    assert d.serial == vector.get("serial")
    if d.scheme == "gid":
        assert d.company_prefix is None and not d.is_gs1
    else:
        assert d.company_prefix == vector["epc_uri"].split(":")[4].split(".")[0]
        assert d.is_gs1


def test_tds_worked_example_details() -> None:
    d = decode("3074257BF7194E4000001A85")
    assert d.filter_value == 3
    assert d.company_prefix == "0614141"
    assert d.gs1_key == "80614141123458"
    assert d.epcis_uri == "urn:epc:id:sgtin:0614141.812345.6789"


def test_sgtin198_serial_text_is_unescaped() -> None:
    d = decode("3634F4E4E40C0E60C25EC592DF00000000000000000000000000")
    assert d.serial == "AB%2F12-x"
    assert d.serial_text == "AB/12-x"


def test_sscc_key_and_filter() -> None:
    d = decode("3154257BF4499602D2000000")
    assert d.scheme == "sscc"
    assert d.gs1_key == "106141412345678908"
    assert d.filter_value == 2
    assert d.gtin14 is None


def test_lower_case_and_whitespace_are_normalised() -> None:
    d = decode(" 3074257bf7194e4000001a85 ")
    assert d.ok and d.hex == "3074257BF7194E4000001A85"


def test_trailing_words_beyond_the_encoding_are_ignored() -> None:
    # A 128-bit EPC bank holding an SGTIN-96 (zero-padded) decodes to the same identity.
    assert decode("3074257BF7194E4000001A850000").uri == "urn:epc:id:sgtin:0614141.812345.6789"


@pytest.mark.parametrize(
    ("epc", "status", "fragment"),
    [
        ("", EpcStatus.MALFORMED, "empty"),
        ("   ", EpcStatus.MALFORMED, "empty"),
        ("ABC", EpcStatus.MALFORMED, "odd number"),
        ("30742G7BF7194E4000001A85", EpcStatus.MALFORMED, "non-hex character 'G'"),
        ("3074257BF7194E40", EpcStatus.MALFORMED, "header 0x30"),  # truncated SGTIN-96
        ("30FF257BF7194E4000001A85", EpcStatus.MALFORMED, "partition"),  # partition 7
        ("E2801160600002000000", EpcStatus.NOT_GS1, "unknown EPC header 0xE2"),
        ("000000000000000000000000", EpcStatus.NOT_GS1, "unprogrammed"),
        ("FF0000000000000000000000", EpcStatus.NOT_GS1, "0xFF"),
    ],
)
def test_garbage_is_classified_not_raised(epc: str, status: EpcStatus, fragment: str) -> None:
    d = decode(epc)
    assert d.status is status
    assert d.uri is None
    assert d.error is not None and fragment in d.error


def test_non_string_input_is_malformed() -> None:
    d = decode(None)  # type: ignore[arg-type]
    assert d.status is EpcStatus.MALFORMED and "hex string" in (d.error or "")
    assert decode([1, 2]).status is EpcStatus.MALFORMED  # type: ignore[arg-type]


def test_raw_uri_for_undecodable_tags() -> None:
    assert decode("E2801160600002000000").epcis_uri == "urn:epc:raw:80.xE2801160600002000000"
    assert decode("ZZ").epcis_uri is None


def test_decode_is_cached() -> None:
    decode_cache_clear()
    a = decode("3034257BF7194E4000003039")
    b = decode("3034257BF7194E4000003039")
    assert a is b
    hits, misses, size = decode_cache_info()
    assert (hits, misses, size) == (1, 1, 1)


def test_decoded_is_frozen() -> None:
    d = decode("3034257BF7194E4000003039")
    with pytest.raises(AttributeError):
        d.serial = "1"  # type: ignore[misc]


# -- classification ---------------------------------------------------------------------------

OURS_HEX = "3034257BF7194E4000003039"  # 0614141, GTIN 80614141123458
OTHER_HEX = "3034F4E4E40C0E40000181CD"  # 4012345


@pytest.mark.parametrize(
    ("prefixes", "catalog", "epc", "expected"),
    [
        ({"0614141"}, None, OURS_HEX, EpcClass.OURS),
        ({"0614141"}, None, OTHER_HEX, EpcClass.FOREIGN_PREFIX),
        (set(), None, OTHER_HEX, EpcClass.OURS),  # empty: every prefix is ours
        ({"0614141"}, {"80614141123458"}, OURS_HEX, EpcClass.OURS),
        ({"0614141"}, {"00000000000000"}, OURS_HEX, EpcClass.UNKNOWN_PRODUCT),
        ({"0614141"}, set(), OURS_HEX, EpcClass.UNKNOWN_PRODUCT),
        ({"0614141"}, {"00000000000000"}, "3154257BF4499602D2000000", EpcClass.OURS),  # SSCC
        ({"0614141"}, {"00000000000000"}, OTHER_HEX, EpcClass.FOREIGN_PREFIX),
        ({"0614141"}, None, "355AB1C60003039000000190", EpcClass.NOT_GS1),  # GID
        (set(), None, "E2801160600002000000", EpcClass.NOT_GS1),
        (set(), None, "", EpcClass.MALFORMED),
        (set(), None, "3074257BF7194E40", EpcClass.MALFORMED),
    ],
)
def test_classifier(
    prefixes: set[str], catalog: set[str] | None, epc: str, expected: EpcClass
) -> None:
    assert EpcClassifier(prefixes, catalog).classify_hex(epc) is expected


def test_classifier_with_catalog_keeps_prefixes() -> None:
    c = EpcClassifier({"0614141"}).with_catalog({"99999999999999"})
    assert c.classify_hex(OURS_HEX) is EpcClass.UNKNOWN_PRODUCT
    assert c.classify_hex(OTHER_HEX) is EpcClass.FOREIGN_PREFIX


# -- properties -------------------------------------------------------------------------------


@st.composite
def sgtin_parts(draw: st.DrawFn) -> tuple[str, int, int, int]:
    cp_len = draw(st.integers(6, 12))
    digits = draw(st.text("0123456789", min_size=13, max_size=13))
    gtin13 = digits
    gtin14 = gtin13 + gs1_check_digit(gtin13)
    serial = draw(st.integers(0, 2**38 - 1))
    filter_value = draw(st.integers(0, 7))
    return gtin14, serial, cp_len, filter_value


@settings(max_examples=300, deadline=None)
@given(sgtin_parts())
def test_sgtin96_roundtrip(parts: tuple[str, int, int, int]) -> None:
    gtin14, serial, cp_len, filter_value = parts
    hex_ = sgtin96_hex(gtin14, serial, cp_len, filter_value)
    d = decode(hex_)
    assert d.status is EpcStatus.OK, d.error
    assert len(hex_) == 24
    assert d.scheme == "sgtin"
    assert d.gtin14 == gtin14
    assert d.serial == str(serial)
    assert d.filter_value == filter_value
    assert d.company_prefix == gtin14[1 : 1 + cp_len]
    assert d.uri == (
        f"urn:epc:id:sgtin:{gtin14[1 : 1 + cp_len]}.{gtin14[0]}{gtin14[1 + cp_len : 13]}.{serial}"
    )
    assert EpcClassifier({d.company_prefix}, {gtin14}).classify(d) is EpcClass.OURS


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text("0123456789abcdefABCDEF", max_size=64)))
def test_arbitrary_strings_never_raise(text: str) -> None:
    d = decode(text)
    assert isinstance(d, DecodedEpc)
    assert (d.status is EpcStatus.OK) == (d.uri is not None)
    assert d.status is EpcStatus.OK or d.error
    EpcClassifier({"0614141"}, {"80614141123458"}).classify(d)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=40))
def test_random_banks_with_epc_headers_never_raise(payload: bytes) -> None:
    for header in ("30", "31", "35", "36", "2F", "3B", "40"):
        d = decode(header + payload.hex())
        assert d.status in EpcStatus
        if d.status is EpcStatus.OK:
            assert d.uri is not None and d.uri.startswith("urn:epc:id:")
