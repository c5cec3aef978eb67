"""EPC encoding and decoding (GS1 Tag Data Standard) through epcpy, cached per EPC."""

from __future__ import annotations

from epcpy.epc_schemes import SGTIN
from epcpy.epc_schemes.sgtin import SGTINFilterValue


def sgtin96_hex(gtin14: str, serial: int, company_prefix_digits: int, filter_value: int = 1) -> str:
    """The SGTIN-96 EPC bank (upper-case hex) of an item: what a workshop encodes on its tag."""
    sgtin = SGTIN.from_gtin_plus_serial(gtin14, str(serial), company_prefix_digits)
    hex_ = sgtin.hex(
        binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
        filter_value=SGTINFilterValue(str(filter_value)),
    )
    return str(hex_).upper()
