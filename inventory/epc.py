"""EPC encoding and decoding (GS1 Tag Data Standard) through epcpy, cached per EPC.

A store reads the same few hundred thousand tags all day, so `decode` is memoised (bounded LRU):
the first read of a tag pays for epcpy (~20 µs), every later read is a dictionary hit. Decoding
never raises on tag data: garbage from the air (odd lengths, non-hex, unknown headers, truncated
EPCs) comes back as a `DecodedEpc` whose `status` says why it is not usable.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from epcpy.epc_schemes.base_scheme import GS1Keyed
from epcpy.epc_schemes.sgtin import SGTIN, SGTINFilterValue
from epcpy.utils.parsers import TAG_ENCODABLE_HEX_HEADERS, hex_to_tag_encodable

DECODE_CACHE_SIZE = 20_000
"""Bounded so a flood of garbage EPCs cannot grow memory. The ingest does not decode items
already present, so the cache serves foreign tags in view and moves, not the whole stock."""

# Schemes whose pure identity starts with a GS1 Company Prefix and whose binary encoding has a
# 3-bit filter right after the 8-bit header (GS1 TDS §14). GID, USDOD and ADI are EPC schemes
# too, but they are not keyed by a GS1 Company Prefix.
_GS1_SCHEMES = frozenset(
    {"sgtin", "sscc", "sgln", "grai", "giai", "gsrn", "gsrnp", "gdti", "cpi", "sgcn", "itip"}
)
_HEX = re.compile(r"[0-9A-F]*")
_HEX_HEADERS: frozenset[str] = frozenset(TAG_ENCODABLE_HEX_HEADERS)


class EpcStatus(enum.StrEnum):
    OK = "ok"
    """Decoded to a pure-identity EPC URI."""
    NOT_GS1 = "not_gs1"
    """Well-formed hex, but not an EPC binary encoding this build decodes (unprogrammed tag,
    ISO/vendor data, a header GS1 TDS does not define or epcpy does not support)."""
    MALFORMED = "malformed"
    """Empty, odd length, non-hex, or a known header whose content is invalid or truncated."""


@dataclass(frozen=True, slots=True)
class DecodedEpc:
    """What a tag's EPC bank says, or why it says nothing usable.

    `serial` is the serial as it appears in the pure-identity URI (URI-escaped, e.g.
    `AB%2F12-x`); `serial_text` is the GS1 AI (21) value (`AB/12-x`). `company_prefix` is set
    only for GS1-keyed schemes (not for GID/USDOD/ADI); `filter_value` likewise.
    """

    hex: str
    status: EpcStatus
    scheme: str | None = None
    uri: str | None = None
    gs1_key: str | None = None
    gtin14: str | None = None
    serial: str | None = None
    company_prefix: str | None = None
    filter_value: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is EpcStatus.OK

    @property
    def is_gs1(self) -> bool:
        """Decoded and keyed by a GS1 Company Prefix."""
        return self.status is EpcStatus.OK and self.company_prefix is not None

    @property
    def serial_text(self) -> str | None:
        return None if self.serial is None else unquote(self.serial)

    @property
    def raw_uri(self) -> str | None:
        """TDS raw URI (`urn:epc:raw:96.x3074...`): names a tag that has no pure identity."""
        if self.status is EpcStatus.MALFORMED and not (self.hex and _HEX.fullmatch(self.hex)):
            return None
        return f"urn:epc:raw:{len(self.hex) * 4}.x{self.hex}" if self.hex else None

    @property
    def epcis_uri(self) -> str | None:
        """The best URI to put in an EPCIS epcList: pure identity if any, else the raw URI."""
        return self.uri if self.uri is not None else self.raw_uri


def decode(epc_hex: str) -> DecodedEpc:
    """Decode an EPC bank (hex, without PC bits) into its GS1 identity; never raises."""
    if type(epc_hex) is not str:  # unhashable junk must not reach the cache
        return _decode(epc_hex)
    return _decode_cached(epc_hex)


def decode_cache_info() -> tuple[int, int, int]:
    """(hits, misses, current size) of the decode cache, for metrics."""
    info = _decode_cached.cache_info()
    return info.hits, info.misses, info.currsize


def decode_cache_clear() -> None:
    _decode_cached.cache_clear()


@lru_cache(maxsize=DECODE_CACHE_SIZE)
def _decode_cached(epc_hex: str) -> DecodedEpc:
    try:
        return _decode(epc_hex)
    except Exception as exc:  # tag data must never kill the ingest thread
        text = epc_hex if isinstance(epc_hex, str) else repr(epc_hex)
        return DecodedEpc(
            hex=text, status=EpcStatus.MALFORMED, error=f"EPC {text!r}: {type(exc).__name__}: {exc}"
        )


def _decode(epc_hex: str) -> DecodedEpc:
    if not isinstance(epc_hex, str):
        return DecodedEpc(
            hex=repr(epc_hex),
            status=EpcStatus.MALFORMED,
            error=f"EPC must be a hex string, got {type(epc_hex).__name__}",
        )
    h = epc_hex.strip().upper()
    if not h:
        return DecodedEpc(hex=h, status=EpcStatus.MALFORMED, error="empty EPC")
    if not _HEX.fullmatch(h):
        bad = next(c for c in h if c not in "0123456789ABCDEF")
        return DecodedEpc(
            hex=h, status=EpcStatus.MALFORMED, error=f"EPC {h!r}: non-hex character {bad!r}"
        )
    if len(h) % 2:
        return DecodedEpc(
            hex=h,
            status=EpcStatus.MALFORMED,
            error=f"EPC {h!r}: odd number of hex digits ({len(h)})",
        )
    header = h[:2]
    if header not in _HEX_HEADERS:
        reason = "unprogrammed (all zero)" if not h.strip("0") else f"unknown EPC header 0x{header}"
        return DecodedEpc(hex=h, status=EpcStatus.NOT_GS1, error=f"EPC {h}: {reason}")
    try:
        scheme_obj = hex_to_tag_encodable(h)
    except Exception as exc:  # epcpy raises ConvertException, KeyError, ValueError...
        return DecodedEpc(
            hex=h,
            status=EpcStatus.MALFORMED,
            error=f"EPC {h}: header 0x{header} but invalid content: {exc}",
        )
    uri: str = scheme_obj.epc_uri
    scheme = uri.split(":", 4)[3]
    body = uri.split(":", 4)[4]
    company_prefix = filter_value = gs1_key = gtin14 = serial = None
    if scheme in _GS1_SCHEMES:
        company_prefix = body.split(".", 1)[0]
        filter_value = (int(h[2:4], 16) >> 5) & 0b111
        try:
            if isinstance(scheme_obj, GS1Keyed):
                gs1_key = str(scheme_obj.gs1_key())
        except Exception:  # a key we cannot render is not a decoding failure
            gs1_key = None
    if scheme == "sgtin":
        gtin14 = gs1_key
        serial = body.split(".", 2)[2]
    return DecodedEpc(
        hex=h,
        status=EpcStatus.OK,
        scheme=scheme,
        uri=uri,
        gs1_key=gs1_key,
        gtin14=gtin14,
        serial=serial,
        company_prefix=company_prefix,
        filter_value=filter_value,
    )


class EpcClass(enum.StrEnum):
    """How the daemon treats a tag: only OURS items count as stock."""

    OURS = "ours"
    FOREIGN_PREFIX = "foreign_prefix"
    """A GS1 EPC of another company (a customer's item, a neighbour shop's tag)."""
    UNKNOWN_PRODUCT = "unknown_product"
    """Our prefix, but a GTIN the catalog does not list (catalog not synced, or mis-encoded)."""
    NOT_GS1 = "not_gs1"
    MALFORMED = "malformed"


class EpcClassifier:
    """Sorts decoded EPCs into ours / foreign / unknown product / not GS1 / malformed.

    `company_prefixes` empty means every GS1 prefix is ours (the config default). The catalog
    check applies to SGTINs only (cases, assets and locations are not catalog products) and only
    when a catalog GTIN set is given.
    """

    def __init__(
        self, company_prefixes: Iterable[str], catalog_gtins: Iterable[str] | None = None
    ) -> None:
        self.company_prefixes = frozenset(company_prefixes)
        self.catalog_gtins = None if catalog_gtins is None else frozenset(catalog_gtins)

    def with_catalog(self, catalog_gtins: Iterable[str] | None) -> EpcClassifier:
        """A classifier with a new catalog (the catalog arrives from HQ at run time)."""
        return EpcClassifier(self.company_prefixes, catalog_gtins)

    def classify(self, decoded: DecodedEpc) -> EpcClass:
        if decoded.status is EpcStatus.MALFORMED:
            return EpcClass.MALFORMED
        if decoded.status is not EpcStatus.OK or decoded.company_prefix is None:
            return EpcClass.NOT_GS1
        if self.company_prefixes and decoded.company_prefix not in self.company_prefixes:
            return EpcClass.FOREIGN_PREFIX
        if (
            self.catalog_gtins is not None
            and decoded.gtin14 is not None
            and decoded.gtin14 not in self.catalog_gtins
        ):
            return EpcClass.UNKNOWN_PRODUCT
        return EpcClass.OURS

    def classify_hex(self, epc_hex: str) -> EpcClass:
        return self.classify(decode(epc_hex))


def sgtin96_hex(gtin14: str, serial: int, company_prefix_digits: int, filter_value: int = 1) -> str:
    """The SGTIN-96 EPC bank (upper-case hex) of an item: what a workshop encodes on its tag."""
    sgtin = SGTIN.from_gtin_plus_serial(gtin14, str(serial), company_prefix_digits)
    hex_ = sgtin.hex(
        binary_coding_scheme=SGTIN.BinaryCodingScheme.SGTIN_96,
        filter_value=SGTINFilterValue(str(filter_value)),
    )
    return str(hex_).upper()


_SGTIN_URI = re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.(\d{1,12})$")


def epc_hex_from_uri(uri: str, filter_value: int = 1) -> str:
    """The SGTIN-96 EPC bank of a pure-identity SGTIN URI (ASNs and ERPs speak URIs, tags hex).

    The URI does not carry the tag's filter value: 1 (point-of-sale item) is assumed. Callers that
    know the tags already read at a site should map URIs through them first.
    """
    m = _SGTIN_URI.match(uri.strip())
    if m is None:
        raise ValueError(f"EPC {uri!r}: only SGTIN URIs with a numeric serial "
                         "(urn:epc:id:sgtin:CompanyPrefix.ItemRef.Serial) can be given as URIs")
    prefix, item_ref, serial = m.groups()
    body = item_ref[0] + prefix + item_ref[1:]
    digits = body + _gtin_check(body)
    gtin14 = digits.zfill(14)
    try:
        return sgtin96_hex(gtin14, int(serial), len(prefix), filter_value)
    except Exception as exc:  # epcpy: serial or partition out of range for SGTIN-96
        raise ValueError(f"EPC {uri!r} does not fit SGTIN-96: {exc}") from None


def _gtin_check(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)
