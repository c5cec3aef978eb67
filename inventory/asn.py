"""Advance shipping notices (EDI DESADV): what a shipment should contain.

Validation is strict and all-or-nothing per ASN: a half-imported ASN would turn every item on the
dropped lines into a false "unexpected" at reception. Every problem is reported at once, naming
the line (CSV or JSON) and field. A content hash makes re-imports idempotent: the same ASN twice
is "identical", a different ASN reusing an id is a "conflict" that needs a human.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inventory.catalog import (
    GtinError,
    ImportIssue,
    iter_csv_records,
    iter_json_array,
    normalize_gtin,
)
from inventory.isotime import IsoTimeError, parse_iso_datetime

CSV_COLUMNS = ("asn_id", "origin", "destination", "shipped_at", "epc", "gtin", "quantity", "tid")
HEADER_FIELDS = ("asn_id", "origin", "destination", "shipped_at")
JSON_FIELDS = (*HEADER_FIELDS, "epcs", "lines", "tids")
_TID = re.compile(r"^[0-9A-F]{8,64}$")
MAX_QUANTITY = 1_000_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,127}$")
_HEX = re.compile(r"^[0-9A-F]+$")

EpcNormalizer = Callable[[str], str]


def normalize_epc_hex(value: str) -> str:
    """An EPC bank as upper-case hex, whole 16-bit words (EPC-96 is 24 digits); raises ValueError.

    Pure-identity URIs (urn:epc:id:...) need the EPC codec: pass `normalize_epc=` to the parsers.
    """
    s = value.strip().upper()
    if s.startswith("0X"):
        s = s[2:]
    if s.startswith("URN:"):
        raise ValueError(f"EPC {value!r} is a URI; this importer expects hex EPCs")
    if not s or not _HEX.match(s) or len(s) % 4 or len(s) > 124:
        raise ValueError(f"EPC must be hex in whole 16-bit words (e.g. 24 digits), got {value!r}")
    return s


@dataclass(frozen=True, slots=True)
class Asn:
    """One shipment notice. `epcs` sorted and unique; `quantities` (gtin14, qty) sorted by GTIN.

    Quantity lines stand for items the notice does not list by EPC: the expected count of a GTIN
    is its listed EPCs plus its quantity.
    """

    asn_id: str
    origin: str
    destination: str
    shipped_at: datetime
    epcs: tuple[str, ...]
    quantities: tuple[tuple[str, int], ...]
    tids: tuple[tuple[str, str], ...] = ()
    """(epc, TID) of listed items bound at commissioning, sorted: the receiver checks the
    chip it reads against them (a cloned EPC on another chip) and keeps them for returns."""

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical content: equal for the same ASN however it was formatted."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    @property
    def expected_items(self) -> int:
        return len(self.epcs) + sum(q for _, q in self.quantities)

    def to_dict(self) -> dict[str, Any]:
        return {
            "asn_id": self.asn_id,
            "origin": self.origin,
            "destination": self.destination,
            "shipped_at": self.shipped_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "epcs": list(self.epcs),
            "lines": [{"gtin": g, "quantity": q} for g, q in self.quantities],
            **({"tids": dict(self.tids)} if self.tids else {}),
        }


@dataclass(frozen=True, slots=True)
class AsnImportResult:
    """Valid ASNs and the problems that rejected the others (an ASN with any error is dropped)."""

    asns: tuple[Asn, ...]
    errors: tuple[ImportIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


class AsnOutcome(enum.StrEnum):
    NEW = "new"
    IDENTICAL = "identical"
    CONFLICT = "conflict"


class AsnBook:
    """Known ASNs by id; `add` tells new / identical (nothing to do) / conflict (same id, other
    content: the stored one is kept, a person decides)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Asn] = {}

    def add(self, asn: Asn) -> AsnOutcome:
        old = self._by_id.get(asn.asn_id)
        if old is None:
            self._by_id[asn.asn_id] = asn
            return AsnOutcome.NEW
        if old.content_hash == asn.content_hash:
            return AsnOutcome.IDENTICAL
        return AsnOutcome.CONFLICT

    def get(self, asn_id: str) -> Asn | None:
        return self._by_id.get(asn_id)

    def __len__(self) -> int:
        return len(self._by_id)


def classify_import(existing_hash: str | None, asn: Asn) -> AsnOutcome:
    """The same decision as AsnBook.add for callers that keep ASNs in a database."""
    if existing_hash is None:
        return AsnOutcome.NEW
    return AsnOutcome.IDENTICAL if existing_hash == asn.content_hash else AsnOutcome.CONFLICT


def _parse_id(raw: Any, field: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("is required")
    s = raw.strip()
    if not _ID.match(s):
        raise ValueError(
            f"must be 1-128 characters of letters, digits and ._:/#- (starting alphanumeric), "
            f"got {raw!r}"
        )
    return s


def parse_timestamp(raw: Any, field: str = "shipped_at") -> datetime:
    """ISO 8601 with an explicit offset ('Z' or +hh:mm), returned in UTC; the ValueError says
    the problem alone (the import issue names the line and field)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValueError("is required")
    try:
        return parse_iso_datetime(raw, field).astimezone(UTC)
    except IsoTimeError as exc:
        raise ValueError(exc.problem) from None


def _parse_quantity(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"must be a whole number, got {raw!r}")
    if isinstance(raw, int):
        q = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        q = int(raw.strip())
    else:
        raise ValueError(f"must be a whole number, got {raw!r}")
    if not 1 <= q <= MAX_QUANTITY:
        raise ValueError(f"must be between 1 and {MAX_QUANTITY}, got {q}")
    return q


class _Builder:
    """Accumulates one ASN's content and its errors across lines."""

    def __init__(self, source: str, normalize_epc: EpcNormalizer) -> None:
        self.source = source
        self.normalize_epc = normalize_epc
        self.header: dict[str, Any] = {}
        self.header_line: dict[str, int | None] = {}
        self.epcs: dict[str, int | None] = {}
        self.quantities: dict[str, int] = defaultdict(int)
        self.tids: dict[str, str] = {}
        self.errors: list[ImportIssue] = []

    def error(self, line: int | None, field: str | None, msg: str, record: int | None) -> None:
        self.errors.append(ImportIssue(self.source, line, field, msg, record))

    def set_header(self, field: str, raw: Any, line: int | None, record: int | None) -> None:
        try:
            value: Any = parse_timestamp(raw) if field == "shipped_at" else _parse_id(raw, field)
        except ValueError as exc:
            self.error(line, field, str(exc), record)
            return
        if field in self.header and self.header[field] != value:
            self.error(
                line,
                field,
                f"{value} differs from {self.header[field]} given at line "
                f"{self.header_line[field]}",
                record,
            )
            return
        self.header.setdefault(field, value)
        self.header_line.setdefault(field, line)

    def add_epc(self, raw: Any, line: int | None, field: str, record: int | None) -> str | None:
        """Add a listed EPC; returns it normalized (None: an error was recorded)."""
        if not isinstance(raw, str):
            self.error(line, field, f"EPC must be a string, got {raw!r}", record)
            return None
        try:
            epc = self.normalize_epc(raw)
        except ValueError as exc:
            self.error(line, field, str(exc), record)
            return None
        if epc in self.epcs:
            self.error(line, field, f"EPC {epc} listed twice (first at line {self.epcs[epc]})",
                       record)
            return None
        self.epcs[epc] = line
        return epc

    def add_tid(self, epc: str, tid: Any, line: int | None, field: str,
                record: int | None) -> None:
        """The TID bound to the listed `epc` at commissioning."""
        text = tid.strip().upper() if isinstance(tid, str) else ""
        if not _TID.match(text) or len(text) % 4:
            self.error(line, field, f"TID must be 8-64 hex digits in whole words, got "
                       f"{tid!r}", record)
            return
        self.tids[epc] = text

    def add_quantity(self, gtin: Any, qty: Any, line: int | None, record: int | None,
                     prefix: str = "") -> None:
        ok = True
        try:
            if not isinstance(gtin, str):
                raise GtinError("is required" if gtin is None else f"must be a string: {gtin!r}")
            g = normalize_gtin(gtin)
        except GtinError as exc:
            self.error(line, prefix + "gtin", str(exc), record)
            ok = False
        try:
            q = _parse_quantity(qty)
        except ValueError as exc:
            self.error(line, prefix + "quantity", str(exc), record)
            ok = False
        if ok:
            self.quantities[g] += q

    def build(self, line: int | None, record: int | None) -> Asn | None:
        for field in HEADER_FIELDS:
            if field not in self.header and not any(e.field == field for e in self.errors):
                self.error(line, field, "is required", record)
        if not self.epcs and not self.quantities and not self.errors:
            self.error(line, None, "ASN lists no EPCs and no GTIN quantities", record)
        if self.errors:
            return None
        return Asn(
            asn_id=self.header["asn_id"],
            origin=self.header["origin"],
            destination=self.header["destination"],
            shipped_at=self.header["shipped_at"],
            epcs=tuple(sorted(self.epcs)),
            quantities=tuple(sorted(self.quantities.items())),
            tids=tuple(sorted(self.tids.items())),
        )

    def add_tids(self, raw: Any, line: int | None, record: int | None) -> None:
        """`tids`: {epc: TID hex} for listed EPCs (after the EPCs were added)."""
        if not isinstance(raw, Mapping):
            self.error(line, "tids", "must be an object {epc: TID hex}", record)
            return
        for key, tid in raw.items():
            where = f"tids.{key}"
            try:
                epc = self.normalize_epc(key) if isinstance(key, str) else ""
            except ValueError as exc:
                self.error(line, where, str(exc), record)
                continue
            if epc not in self.epcs:
                self.error(line, where, "EPC not listed in epcs", record)
                continue
            self.add_tid(epc, tid, line, where, record)


def parse_asn_csv(
    text: str, source: str = "<csv>", normalize_epc: EpcNormalizer = normalize_epc_hex
) -> AsnImportResult:
    """Parse ASN CSV: header asn_id,origin,destination,shipped_at,epc,gtin,quantity[,tid].

    Each row carries either an `epc` or a `gtin` + `quantity`. Header fields repeat on every row
    (blank means "same as above"); rows of several asn_ids make several ASNs. The optional
    `tid` column: the TID bound to the row's EPC at commissioning (as `tids` in JSON), blank
    when none was bound; a TID on a quantity row is an error.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return AsnImportResult((), (ImportIssue(source, 1, None, "empty file: no header"),))
    except csv.Error as exc:
        return AsnImportResult((), (ImportIssue(source, 1, None, f"bad CSV: {exc}"),))
    names = [h.strip().lower() for h in header]
    file_errors = [
        ImportIssue(source, 1, n, "unknown column") for n in names if n not in CSV_COLUMNS
    ]
    file_errors += [
        ImportIssue(source, 1, c, "required column missing from header")
        for c in HEADER_FIELDS
        if c not in names
    ]
    if not any(c in names for c in ("epc", "gtin")):
        file_errors.append(ImportIssue(source, 1, "epc", "needs an 'epc' or 'gtin' column"))
    if "gtin" in names and "quantity" not in names:
        file_errors.append(ImportIssue(source, 1, "quantity", "a 'gtin' column needs 'quantity'"))
    if len(set(names)) != len(names):
        file_errors.append(ImportIssue(source, 1, None, "a column name is repeated"))
    if file_errors:
        return AsnImportResult((), tuple(file_errors))

    builders: dict[str, _Builder] = {}
    last_line: dict[str, int] = {}
    orphan_errors: list[ImportIssue] = []
    current: str | None = None
    for line, raw in iter_csv_records(reader, names, source):
        if isinstance(raw, ImportIssue):
            # A broken row belongs to the ASN being read: that ASN is rejected, not the others.
            target = builders.get(current) if current else None
            (target.errors if target else orphan_errors).append(raw)
            continue
        rec = {n: c.strip() for n, c in raw.items()}
        if rec["asn_id"]:
            current = rec["asn_id"]
        if current is None:
            orphan_errors.append(ImportIssue(source, line, "asn_id", "is required"))
            continue
        b = builders.setdefault(current, _Builder(source, normalize_epc))
        last_line[current] = line
        for field in HEADER_FIELDS:
            if rec[field]:
                b.set_header(field, rec[field], line, None)
        epc, gtin, qty = rec.get("epc", ""), rec.get("gtin", ""), rec.get("quantity", "")
        tid = rec.get("tid", "")
        if tid and not epc:
            b.error(line, "tid", "a TID belongs to an EPC row (this row lists none)", None)
        if epc and (gtin or qty):
            b.error(line, "epc", "a row has either an EPC or a GTIN quantity, not both", None)
        elif epc:
            listed = b.add_epc(epc, line, "epc", None)
            if listed is not None and tid:
                b.add_tid(listed, tid, line, "tid", None)
        elif gtin or qty:
            b.add_quantity(gtin or None, qty or None, line, None)
        else:
            b.error(line, "epc", "row has neither an EPC nor a GTIN quantity", None)

    asns: list[Asn] = []
    errors = list(orphan_errors)
    for asn_id, b in builders.items():
        asn = b.build(last_line[asn_id], None)
        errors.extend(b.errors)
        if asn is not None:
            asns.append(asn)
    if not builders and not errors:
        errors.append(ImportIssue(source, None, None, "no ASN rows"))
    return AsnImportResult(tuple(asns), tuple(errors))


def _asn_from_object(
    obj: Any, source: str, line: int | None, record: int | None, normalize_epc: EpcNormalizer
) -> tuple[Asn | None, list[ImportIssue]]:
    b = _Builder(source, normalize_epc)
    if not isinstance(obj, Mapping):
        b.error(line, None, "ASN must be a JSON object", record)
        return None, b.errors
    for key in obj:
        if key not in JSON_FIELDS:
            b.error(line, str(key), "unknown field", record)
    for field in HEADER_FIELDS:
        if field in obj:
            b.set_header(field, obj[field], line, record)
    epcs = obj.get("epcs", [])
    if not isinstance(epcs, list):
        b.error(line, "epcs", "must be a list of EPC strings", record)
    else:
        for i, e in enumerate(epcs):
            b.add_epc(e, line, f"epcs[{i}]", record)
    lines = obj.get("lines", [])
    if not isinstance(lines, list):
        b.error(line, "lines", "must be a list of {gtin, quantity} objects", record)
    else:
        for i, ln in enumerate(lines):
            if not isinstance(ln, Mapping):
                b.error(line, f"lines[{i}]", "must be an object", record)
                continue
            extra = [k for k in ln if k not in ("gtin", "quantity")]
            for k in extra:
                b.error(line, f"lines[{i}].{k}", "unknown field", record)
            b.add_quantity(ln.get("gtin"), ln.get("quantity"), line, record, f"lines[{i}].")
    if "tids" in obj:
        b.add_tids(obj["tids"], line, record)
    return b.build(line, record), b.errors


def parse_asn_json(
    text: str | bytes, source: str = "<json>", normalize_epc: EpcNormalizer = normalize_epc_hex
) -> AsnImportResult:
    """Parse one ASN object or an array of them:
    {"asn_id","origin","destination","shipped_at","epcs":[hex...],"lines":[{"gtin","quantity"}]}.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return AsnImportResult((), (ImportIssue(source, None, None, f"not UTF-8: {exc}"),))
    stripped = text.lstrip()
    asns: list[Asn] = []
    errors: list[ImportIssue] = []
    if stripped.startswith("["):
        try:
            items = list(iter_json_array(text))
        except ValueError as exc:
            return AsnImportResult((), (ImportIssue(source, None, None, f"bad JSON: {exc}"),))
        for idx, (line, obj) in enumerate(items):
            asn, errs = _asn_from_object(obj, source, line, idx, normalize_epc)
            errors.extend(errs)
            if asn is not None:
                asns.append(asn)
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"bad JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            return AsnImportResult((), (ImportIssue(source, exc.lineno, None, msg),))
        asn, errs = _asn_from_object(obj, source, 1, None, normalize_epc)
        errors.extend(errs)
        if asn is not None:
            asns.append(asn)
    unique: dict[str, Asn] = {}
    for a in asns:
        if a.asn_id in unique:
            errors.append(
                ImportIssue(source, None, "asn_id", f"ASN {a.asn_id} appears twice; second dropped")
            )
            continue
        unique[a.asn_id] = a
    return AsnImportResult(tuple(unique.values()), tuple(errors))


def parse_asn_object(
    obj: Any, source: str = "<mqtt>", normalize_epc: EpcNormalizer = normalize_epc_hex
) -> AsnImportResult:
    """An ASN from an already-decoded JSON object (e.g. an HQ command payload)."""
    asn, errs = _asn_from_object(obj, source, None, None, normalize_epc)
    return AsnImportResult((asn,) if asn else (), tuple(errs))


def iter_epcs(asns: Iterable[Asn]) -> Iterable[tuple[str, str]]:
    """(epc, asn_id) for every listed EPC."""
    for a in asns:
        for e in a.epcs:
            yield e, a.asn_id
