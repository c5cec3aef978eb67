"""Reception: reconcile what the readers saw against what the ASN(s) said was shipped.

Reads are kept as a set of EPCs with their first-seen time; the report is computed with set
operations so a 5,000-item shipment reconciles in milliseconds. Every list in the report is sorted
so the same reads give byte-identical reports (HQ diffs them, tests compare them).

Classification of each distinct EPC read while the session is open:
  received              on an ASN's EPC list
  received_by_quantity  not listed, but its GTIN has a quantity line on an ASN
  unexpected            neither (including tags with no GTIN: not GS1 or not ours)
Per GTIN: expected = listed EPCs + quantity lines; received = the reads of that GTIN the header
counts as received (listed, or covered by a quantity line), so the column adds up to the header;
over/short = the positive/negative difference. A wrong serial of a listed GTIN is not received:
the listed serial is short and the other one unexpected, as the item lists say.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inventory.asn import Asn
from inventory.catalog import Product

GtinOf = Callable[[str], str | None]
REPORT_VERSION = 1


class SessionClosedError(RuntimeError):
    """Reads offered to a session after it was closed."""


@dataclass(frozen=True, slots=True)
class GtinLine:
    gtin: str
    name: str | None
    sku: str | None
    expected: int
    received: int
    missing: int  # listed EPCs of this GTIN not read
    unexpected: int  # reads of this GTIN neither listed nor covered by a quantity line
    size: str | None = None  # from the catalog: two variants of one name differ by these
    colour: str | None = None

    @property
    def over(self) -> int:
        return max(0, self.received - self.expected)

    @property
    def short(self) -> int:
        return max(0, self.expected - self.received)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gtin": self.gtin,
            "name": self.name,
            "sku": self.sku,
            "size": self.size,
            "colour": self.colour,
            "expected": self.expected,
            "received": self.received,
            "over": self.over,
            "short": self.short,
            "missing": self.missing,
            "unexpected": self.unexpected,
        }


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    session_id: str
    site: str | None
    asn_ids: tuple[str, ...]
    opened_at: float
    closed_at: float | None
    received: tuple[str, ...]  # listed on an ASN and read
    received_by_quantity: tuple[str, ...]  # read, GTIN covered by a quantity line
    missing: tuple[str, ...]  # listed on an ASN, not read
    unexpected: tuple[str, ...]  # read, not on any ASN
    lines: tuple[GtinLine, ...]  # sorted by GTIN
    gtin_by_epc: Mapping[str, str | None]  # for every EPC in the lists above
    asn_by_epc: Mapping[str, str]  # ASN id of each listed EPC
    warnings: tuple[str, ...] = ()
    unidentified: int = 0  # unexpected reads with no GTIN (not GS1 / not ours)

    @property
    def expected_total(self) -> int:
        return sum(ln.expected for ln in self.lines) + sum(
            1 for e in self.missing + self.received if self.gtin_by_epc.get(e) is None
        )

    @property
    def received_total(self) -> int:
        return len(self.received) + len(self.received_by_quantity)

    def totals(self) -> dict[str, int]:
        return {
            "expected": self.expected_total,
            "received": self.received_total,
            "received_listed": len(self.received),
            "received_by_quantity": len(self.received_by_quantity),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "unidentified": self.unidentified,
            "over": sum(ln.over for ln in self.lines),
            "short": sum(ln.short for ln in self.lines),
        }

    @property
    def complete(self) -> bool:
        """Everything listed arrived, nothing extra, every quantity line met exactly."""
        return not self.missing and not self.unexpected and all(
            ln.over == 0 and ln.short == 0 for ln in self.lines
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document published on rfidd/v1/{site}/reports/reception."""

        def item(e: str) -> dict[str, Any]:
            return {"epc": e, "gtin": self.gtin_by_epc.get(e), "asn_id": self.asn_by_epc.get(e)}

        return {
            "type": "reception",
            "version": REPORT_VERSION,
            "session_id": self.session_id,
            "site": self.site,
            "asn_ids": list(self.asn_ids),
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "complete": self.complete,
            "totals": self.totals(),
            "lines": [ln.to_dict() for ln in self.lines],
            "missing": [item(e) for e in self.missing],
            "unexpected": [item(e) for e in self.unexpected],
            "received": [item(e) for e in self.received],
            "received_by_quantity": [item(e) for e in self.received_by_quantity],
            "warnings": list(self.warnings),
        }


class ReceptionSession:
    """One reception against one or more ASNs; feed it reads, then `close()` for the report.

    `gtin_of` decodes an EPC to its GTIN-14 (None when not a GS1 item of ours); `catalog` names
    products in the report. Not thread-safe: feed it from the ingest thread only.
    """

    def __init__(
        self,
        asns: Asn | Sequence[Asn],
        *,
        gtin_of: GtinOf,
        catalog: Mapping[str, Product] | None = None,
        session_id: str = "",
        site: str | None = None,
        opened_at: float | None = None,
    ) -> None:
        self.asns: tuple[Asn, ...] = (asns,) if isinstance(asns, Asn) else tuple(asns)
        if not self.asns:
            raise ValueError("a reception session needs at least one ASN")
        self.gtin_of = gtin_of
        self.catalog = catalog
        self.session_id = session_id
        self.site = site
        self.opened_at = time.time() if opened_at is None else opened_at
        self.closed_at: float | None = None
        self.warnings: list[str] = []
        ids = [a.asn_id for a in self.asns]
        if len(set(ids)) != len(ids):
            raise ValueError(f"ASN given twice to one session: {sorted(ids)}")
        self._asn_by_epc: dict[str, str] = {}
        for a in self.asns:
            if self.site is not None and a.destination != self.site:
                self.warnings.append(
                    f"ASN {a.asn_id} is addressed to {a.destination!r}, not this site "
                    f"{self.site!r}"
                )
            for e in a.epcs:
                first = self._asn_by_epc.setdefault(e, a.asn_id)
                if first != a.asn_id:
                    self.warnings.append(f"EPC {e} is on ASN {first} and {a.asn_id}; "
                                         f"counted for {first}")
        self._expected = frozenset(self._asn_by_epc)
        self._quantities: Counter[str] = Counter()
        for a in self.asns:
            for g, q in a.quantities:
                self._quantities[g] += q
        self._first_seen: dict[str, float] = {}
        self._gtin_cache: dict[str, str | None] = {}
        self._received_listed = 0

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def expected_epcs(self) -> frozenset[str]:
        return self._expected

    def observe(self, epcs: Iterable[str], at: float | None = None) -> int:
        """Record reads (upper-case hex EPCs); returns how many were new to this session."""
        if self.closed_at is not None:
            raise SessionClosedError(f"reception session {self.session_id!r} is closed")
        t = time.time() if at is None else at
        seen = self._first_seen
        new = [e for e in epcs if e not in seen]
        for e in new:
            seen.setdefault(e, t)
        fresh = set(new)
        self._received_listed += len(fresh & self._expected)
        return len(fresh)

    def first_seen(self, epc: str) -> float | None:
        return self._first_seen.get(epc)

    def progress(self) -> dict[str, int]:
        """Cheap live counters for a UI: listed items read so far out of listed + quantities."""
        return {
            "expected": len(self._expected) + sum(self._quantities.values()),
            "received_listed": self._received_listed,
            "read": len(self._first_seen),
        }

    def close(self, at: float | None = None) -> ReceptionReport:
        """Stop accepting reads and return the final report (closing twice keeps the first time)."""
        if self.closed_at is None:
            self.closed_at = time.time() if at is None else at
        return self.report()

    def _gtin(self, epc: str) -> str | None:
        cache = self._gtin_cache
        if epc not in cache:
            cache[epc] = self.gtin_of(epc)
        return cache[epc]

    def received_by_asn(self) -> dict[str, tuple[str, ...]]:
        """Listed EPCs read, per ASN id: the input for `receiving` events (bizTransaction desadv).

        Items received by quantity are attributed to the first ASN whose quantity lines name their
        GTIN.
        """
        out: dict[str, list[str]] = {a.asn_id: [] for a in self.asns}
        read = self._first_seen.keys()
        for e in sorted(self._expected & read):
            out[self._asn_by_epc[e]].append(e)
        qty_asn: dict[str, str] = {}
        for a in self.asns:
            for qg, _ in a.quantities:
                qty_asn.setdefault(qg, a.asn_id)
        for e in sorted(read - self._expected):
            g = self._gtin(e)
            if g is not None and g in qty_asn:
                out[qty_asn[g]].append(e)
        return {k: tuple(v) for k, v in out.items()}

    def report(self) -> ReceptionReport:
        """The reconciliation so far (interim while open, final once closed)."""
        read = set(self._first_seen)
        received = sorted(read & self._expected)
        missing = sorted(self._expected - read)
        extra = sorted(read - self._expected)
        gtin_by_epc: dict[str, str | None] = {}
        expected_by_gtin: Counter[str] = Counter(self._quantities)
        received_by_gtin: Counter[str] = Counter()
        missing_by_gtin: Counter[str] = Counter()
        unexpected_by_gtin: Counter[str] = Counter()
        for e in self._expected:
            g = self._gtin(e)
            gtin_by_epc[e] = g
            if g is not None:
                expected_by_gtin[g] += 1
        for e in received:
            g = gtin_by_epc[e]
            if g is not None:
                received_by_gtin[g] += 1
        for e in missing:
            g = gtin_by_epc[e]
            if g is not None:
                missing_by_gtin[g] += 1
        by_quantity: list[str] = []
        unexpected: list[str] = []
        unidentified = 0
        for e in extra:
            g = self._gtin(e)
            gtin_by_epc[e] = g
            if g is None:
                unidentified += 1
                unexpected.append(e)
                continue
            if g in self._quantities:
                received_by_gtin[g] += 1
                by_quantity.append(e)
            else:
                unexpected.append(e)
                unexpected_by_gtin[g] += 1
        lines = []
        for g in sorted(expected_by_gtin.keys() | received_by_gtin.keys()
                        | unexpected_by_gtin.keys()):
            p = self.catalog.get(g) if self.catalog is not None else None
            lines.append(
                GtinLine(
                    gtin=g,
                    name=p.name if p else None,
                    sku=p.sku if p else None,
                    expected=expected_by_gtin[g],
                    received=received_by_gtin[g],
                    missing=missing_by_gtin[g],
                    unexpected=unexpected_by_gtin[g],
                    size=p.size if p else None,
                    colour=p.colour if p else None,
                )
            )
        warnings = list(self.warnings)
        if self.catalog is not None:
            unknown = [ln.gtin for ln in lines if ln.name is None]
            if unknown:
                warnings.append(f"{len(unknown)} GTIN(s) not in the catalog: "
                                f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        return ReceptionReport(
            session_id=self.session_id,
            site=self.site,
            asn_ids=tuple(a.asn_id for a in self.asns),
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            received=tuple(received),
            received_by_quantity=tuple(by_quantity),
            missing=tuple(missing),
            unexpected=tuple(unexpected),
            lines=tuple(lines),
            gtin_by_epc=gtin_by_epc,
            asn_by_epc=self._asn_by_epc,
            warnings=tuple(warnings),
            unidentified=unidentified,
        )
