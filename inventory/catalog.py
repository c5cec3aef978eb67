"""Product catalog: what a GTIN is called, what it costs, how it is grouped.

Imports are tolerant per row and strict per field: a file from HQ with one bad row must not block
the other ten thousand, and every bad row is reported with its source, line and field so someone
can fix it upstream.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

CSV_COLUMNS = ("gtin", "sku", "name", "size", "colour", "category", "price", "currency", "cost")
REQUIRED_FIELDS = ("gtin", "sku", "name", "price", "currency")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_TEXT = 200


class GtinError(ValueError):
    """A GTIN that is not 8, 12, 13 or 14 digits or whose check digit is wrong."""


def gtin_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of the digits before it (weights 3,1,3,... from the right)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return (10 - total % 10) % 10


def normalize_gtin(value: str) -> str:
    """A GTIN-8/12/13/14 as the 14-digit form used everywhere in rfidd; raises GtinError."""
    s = value.strip()
    if not s.isascii() or not s.isdigit() or len(s) not in (8, 12, 13, 14):
        raise GtinError(f"GTIN must be 8, 12, 13 or 14 digits, got {value!r}")
    if gtin_check_digit(s[:-1]) != int(s[-1]):
        raise GtinError(
            f"GTIN {value!r} has check digit {s[-1]}, expected {gtin_check_digit(s[:-1])}"
        )
    return s.zfill(14)


def is_valid_gtin(value: str) -> bool:
    try:
        normalize_gtin(value)
    except GtinError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Product:
    gtin14: str
    sku: str
    name: str
    size: str
    colour: str
    category: str
    price: Decimal
    currency: str
    cost: Decimal | None = None  # unit cost in `currency`, when the catalog has one

    def to_dict(self) -> dict[str, str]:
        d = {
            "gtin": self.gtin14,
            "sku": self.sku,
            "name": self.name,
            "size": self.size,
            "colour": self.colour,
            "category": self.category,
            "price": str(self.price),
            "currency": self.currency,
        }
        if self.cost is not None:
            d["cost"] = str(self.cost)
        return d


@dataclass(frozen=True, slots=True)
class ImportIssue:
    """One problem found while importing: where (source, line, record, field) and what."""

    source: str
    line: int | None
    field: str | None
    message: str
    record: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.record is not None:
            where += f" [record {self.record}]"
        if self.field:
            where += f" field {self.field!r}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "record": self.record,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    products: tuple[Product, ...]
    errors: tuple[ImportIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


class Catalog(Mapping[str, Product]):
    """Products by GTIN-14; later imports replace earlier ones (HQ is the source of truth)."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._by_gtin: dict[str, Product] = {}
        self.upsert(products)

    def upsert(self, products: Iterable[Product]) -> tuple[int, int]:
        """Add or replace products; returns (added, changed) so callers can log what happened."""
        added = changed = 0
        for p in products:
            old = self._by_gtin.get(p.gtin14)
            if old is None:
                added += 1
            elif old != p:
                changed += 1
            self._by_gtin[p.gtin14] = p
        return added, changed

    def __getitem__(self, gtin14: str) -> Product:
        return self._by_gtin[gtin14]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_gtin)

    def __len__(self) -> int:
        return len(self._by_gtin)


def _text(raw: Any, field: str, required: bool) -> str:
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ValueError(f"must be text, got {type(raw).__name__}")
    s = raw.strip()
    if required and not s:
        raise ValueError("is required")
    if len(s) > _MAX_TEXT:
        raise ValueError(f"is longer than {_MAX_TEXT} characters")
    return s


def _price(raw: Any) -> Decimal:
    if isinstance(raw, bool) or raw is None:
        raise ValueError("is required")
    try:
        # str() of a float is its shortest repr ("19.99"), so decoded JSON numbers stay exact.
        price = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"is not a number: {raw!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"must be a finite amount >= 0, got {raw!r}")
    return price


def _product_from_record(
    rec: Mapping[str, Any], source: str, line: int | None, record: int | None
) -> tuple[Product | None, list[ImportIssue]]:
    issues: list[ImportIssue] = []
    values: dict[str, Any] = {}

    def bad(field: str, message: str) -> None:
        issues.append(ImportIssue(source, line, field, message, record))

    for field in CSV_COLUMNS:
        raw = rec.get(field)
        try:
            if field == "gtin":
                if not isinstance(raw, str):
                    raise ValueError("is required" if raw is None else "must be a digit string")
                values[field] = normalize_gtin(raw)
            elif field == "price":
                values[field] = _price(raw)
            elif field == "cost":
                blank = raw is None or (isinstance(raw, str) and not raw.strip())
                values[field] = None if blank else _price(raw)
            elif field == "currency":
                cur = _text(raw, field, True).upper()
                if not _CURRENCY.match(cur):
                    raise ValueError(f"must be an ISO 4217 code like EUR, got {raw!r}")
                values[field] = cur
            else:
                values[field] = _text(raw, field, field in REQUIRED_FIELDS)
        except ValueError as exc:
            bad(field, str(exc))
    if issues:
        return None, issues
    return (
        Product(
            gtin14=values["gtin"],
            sku=values["sku"],
            name=values["name"],
            size=values["size"],
            colour=values["colour"],
            category=values["category"],
            price=values["price"],
            currency=values["currency"],
            cost=values["cost"],
        ),
        issues,
    )


def _dedupe(
    rows: Iterable[tuple[Product, int | None, int | None]], source: str
) -> tuple[list[Product], list[ImportIssue]]:
    seen: dict[str, str] = {}
    out: list[Product] = []
    issues: list[ImportIssue] = []
    for product, line, record in rows:
        if product.gtin14 in seen:
            issues.append(
                ImportIssue(
                    source,
                    line,
                    "gtin",
                    f"duplicate GTIN {product.gtin14} (first at {seen[product.gtin14]}); skipped",
                    record,
                )
            )
            continue
        seen[product.gtin14] = f"line {line}" if line is not None else f"record {record}"
        out.append(product)
    return out, issues


def parse_catalog_csv(text: str, source: str = "<csv>") -> ImportResult:
    """Parse a catalog CSV (header gtin,sku,name,size,colour,category,price,currency)."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return ImportResult((), (ImportIssue(source, 1, None, "empty file: no header"),))
    except csv.Error as exc:
        return ImportResult((), (ImportIssue(source, reader.line_num, None, f"bad CSV: {exc}"),))
    names = [h.strip().lower() for h in header]
    errors: list[ImportIssue] = []
    missing = [c for c in REQUIRED_FIELDS if c not in names]
    if missing:
        return ImportResult(
            (),
            tuple(ImportIssue(source, 1, c, "required column missing") for c in missing),
        )
    for n in names:
        if n not in CSV_COLUMNS:
            errors.append(ImportIssue(source, 1, n, "unknown column ignored"))
    good: list[tuple[Product, int | None, int | None]] = []
    for line, rec in iter_csv_records(reader, names, source):
        if isinstance(rec, ImportIssue):
            errors.append(rec)
            continue
        product, issues = _product_from_record(rec, source, line, None)
        errors.extend(issues)
        if product is not None:
            good.append((product, line, None))
    products, dup_issues = _dedupe(good, source)
    errors.extend(dup_issues)
    return ImportResult(tuple(products), tuple(errors))


def iter_csv_records(
    reader: Any, names: list[str], source: str
) -> Iterator[tuple[int, dict[str, str] | ImportIssue]]:
    """(line, record) for each data row of a csv.reader past its header, blank rows skipped;
    a row of the wrong width is (line, ImportIssue) and the rest goes on; broken CSV quoting
    ends the file with an issue (nothing after it can be trusted)."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, ImportIssue(source, reader.line_num, None, f"bad CSV: {exc}")
            return
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield line, ImportIssue(source, line, None,
                                    f"{len(row)} cells, header has {len(names)}")
            continue
        yield line, dict(zip(names, row, strict=True))


def iter_json_array(text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for each element of a top-level JSON array.

    The standard library does not report positions of decoded values; scanning element by element
    lets every error name the line its record starts on. Floats decode as Decimal (prices stay
    exact). Raises ValueError naming the line on malformed JSON.
    """
    decoder = json.JSONDecoder(parse_float=Decimal)
    n = len(text)
    i = 0

    def skip_ws(j: int) -> int:
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    def line_of(j: int) -> int:
        return text.count("\n", 0, j) + 1

    i = skip_ws(i)
    if i >= n or text[i] != "[":
        raise ValueError(f"line {line_of(i)}: expected a JSON array of objects")
    i = skip_ws(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        yield line_of(i), value
        i = skip_ws(end)
        if i < n and text[i] == ",":
            i = skip_ws(i + 1)
            continue
        if i < n and text[i] == "]":
            if skip_ws(i + 1) != n:
                raise ValueError(f"line {line_of(i)}: data after the closing ']'")
            return
        raise ValueError(f"line {line_of(i)}: expected ',' or ']'")


def parse_catalog_json(text: str | bytes, source: str = "<json>") -> ImportResult:
    """Parse a JSON array of product objects (the CSV columns as keys; price a string or number)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return ImportResult((), (ImportIssue(source, None, None, f"not UTF-8: {exc}"),))
    errors: list[ImportIssue] = []
    good: list[tuple[Product, int | None, int | None]] = []
    try:
        for idx, (line, rec) in enumerate(iter_json_array(text)):
            if not isinstance(rec, dict):
                errors.append(ImportIssue(source, line, None, "record is not an object", idx))
                continue
            for key in rec:
                if key not in CSV_COLUMNS:
                    errors.append(ImportIssue(source, line, key, "unknown field ignored", idx))
            product, issues = _product_from_record(rec, source, line, idx)
            errors.extend(issues)
            if product is not None:
                good.append((product, line, idx))
    except ValueError as exc:
        errors.append(ImportIssue(source, None, None, f"bad JSON: {exc}"))
    products, dup_issues = _dedupe(good, source)
    errors.extend(dup_issues)
    return ImportResult(tuple(products), tuple(errors))


def parse_catalog_records(
    records: Iterable[Mapping[str, Any]], source: str = "<records>"
) -> ImportResult:
    """Products from already-decoded objects (an MQTT payload); errors name the record index."""
    errors: list[ImportIssue] = []
    good: list[tuple[Product, int | None, int | None]] = []
    for idx, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            errors.append(ImportIssue(source, None, None, "record is not an object", idx))
            continue
        product, issues = _product_from_record(rec, source, None, idx)
        errors.extend(issues)
        if product is not None:
            good.append((product, None, idx))
    products, dup_issues = _dedupe(good, source)
    errors.extend(dup_issues)
    return ImportResult(tuple(products), tuple(errors))
