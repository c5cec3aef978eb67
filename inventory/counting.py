"""Cycle counts: reconcile what the readers saw per zone against the book (where items should be).

Built for a million items: sightings are kept as one set of EPCs per zone, the book as one set per
booked zone, and reconciliation is a handful of C-level set operations. Per-item Python work only
happens for the exceptions (missing, misplaced, unexpected), which is what staff act on anyway.

Every item the count expects (booked in a counted zone) ends up exactly one of:
  found      seen in its booked zone (also seen elsewhere does not matter)
  misplaced  not seen in its booked zone but seen in another zone
  missing    not seen at all
Reads of items not booked in a counted zone, seen in a counted zone, are `unexpected` (or
`unidentified` when `record_of` says they are not a stock item: non-GS1 or foreign tags).
Items the store holds that are not sellable stock (client holds, sold items awaiting
collection, returns, repairs: `set_aside`, epc -> (section, booked zone)) are reported in their
own sections, found or not seen, never as unexpected, missing or in the accuracy figures.
Results depend only on the set of (epc, zone) sightings, never on their order.

A count may take several passes (handheld devices, operators, zones: `add_pass`); they merge
into one result (a set union of sightings). A recount of the exceptions only is a session over
`recount_book(result)` restricted to those items (`only`): everything else read is ignored.

Inventory record accuracy (IRA) is reported two ways:
  record     share of SKU x zone records whose booked quantity equals the counted quantity
  aggregate  1 - |total counted - total booked| / total booked
The aggregate overstates accuracy: errors of opposite sign cancel. An item booked in the stockroom
but found on the floor is -1 on one record and +1 on another (two wrong records, sum unchanged);
a missing scarf and an unbooked extra scarf of another SKU also cancel. Only the per-record figure
tells staff whether the system can be trusted to find a given SKU in a given place.
"""

from __future__ import annotations

import gc
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from inventory.reception import SessionClosedError

RecordOf = Mapping[str, str] | Callable[[str], str | None]
REPORT_VERSION = 1

__all__ = [
    "Accuracy",
    "CountPass",
    "CountResult",
    "CountSession",
    "Misplaced",
    "Missing",
    "RecordCount",
    "SectionEntry",
    "SessionClosedError",
    "Unexpected",
    "ZoneTally",
]


class Missing(NamedTuple):
    epc: str
    booked_zone: str


class Misplaced(NamedTuple):
    epc: str
    booked_zone: str
    found_zone: str


class Unexpected(NamedTuple):
    epc: str
    zone: str  # counted zone it was seen in
    booked_zone: str | None  # where the book has it (outside this count), None when unknown


class SectionEntry(NamedTuple):
    epc: str
    booked_zone: str | None
    seen_zone: str | None  # None: not seen by this count


class CountPass(NamedTuple):
    """One pass of a handheld (or any device) merged into the count."""

    zone: str
    device: str | None
    operator: str | None
    at: float | None
    read: int  # distinct EPCs the pass read
    new: int  # of which no earlier pass or reader had seen in that zone

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class RecordCount(NamedTuple):
    record: str  # the SKU (or GTIN) key given by record_of
    zone: str
    booked: int
    counted: int


@dataclass(frozen=True, slots=True)
class ZoneTally:
    expected: int
    found: int
    missing: int
    misplaced_out: int  # booked here, seen elsewhere
    misplaced_in: int  # booked in another counted zone, seen only here
    unexpected: int

    def to_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "found": self.found,
            "missing": self.missing,
            "misplaced_out": self.misplaced_out,
            "misplaced_in": self.misplaced_in,
            "unexpected": self.unexpected,
        }


@dataclass(frozen=True, slots=True)
class Accuracy:
    item: float | None  # found / expected
    record: float | None  # accurate SKU x zone records / records
    sku: float | None  # accurate SKU totals (zones summed) / SKUs
    aggregate: float | None  # 1 - |sum counted - sum booked| / sum booked
    records: int
    accurate_records: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "record": self.record,
            "sku": self.sku,
            "aggregate": self.aggregate,
            "records": self.records,
            "accurate_records": self.accurate_records,
        }


@dataclass(frozen=True, slots=True)
class CountResult:
    session_id: str
    zones: tuple[str, ...]
    started_at: float
    finished_at: float
    expected: int
    found: frozenset[str]
    missing: tuple[Missing, ...]
    misplaced: tuple[Misplaced, ...]
    unexpected: tuple[Unexpected, ...]
    unidentified: tuple[str, ...]
    per_zone: Mapping[str, ZoneTally]
    records: tuple[RecordCount, ...]  # every SKU x counted-zone record, sorted
    accuracy: Accuracy
    distinct_sightings: int
    sections: Mapping[str, tuple[SectionEntry, ...]] = field(default_factory=dict)
    passes: tuple[CountPass, ...] = ()

    def located(self) -> frozenset[str]:
        """Expected items seen anywhere (found + misplaced): known present at count time."""
        return self.found | {m.epc for m in self.misplaced}

    def totals(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "found": len(self.found),
            "missing": len(self.missing),
            "misplaced": len(self.misplaced),
            "unexpected": len(self.unexpected),
            "unidentified": len(self.unidentified),
        }

    def to_dict(self, include_found: bool = False) -> dict[str, Any]:
        """The JSON document for rfidd/v1/{site}/reports/count.

        Found EPCs are omitted by default (a million of them is 27 MB); exceptions are listed in
        full, and only the records that disagree with the book.
        """
        doc: dict[str, Any] = {
            "type": "count",
            "version": REPORT_VERSION,
            "session_id": self.session_id,
            "zones": list(self.zones),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "totals": self.totals(),
            "accuracy": self.accuracy.to_dict(),
            "per_zone": {z: t.to_dict() for z, t in sorted(self.per_zone.items())},
            "missing": [{"epc": m.epc, "booked_zone": m.booked_zone} for m in self.missing],
            "misplaced": [
                {"epc": m.epc, "booked_zone": m.booked_zone, "found_zone": m.found_zone}
                for m in self.misplaced
            ],
            "unexpected": [
                {"epc": u.epc, "zone": u.zone, "booked_zone": u.booked_zone}
                for u in self.unexpected
            ],
            "unidentified": list(self.unidentified),
            "discrepant_records": [
                {"record": r.record, "zone": r.zone, "booked": r.booked, "counted": r.counted}
                for r in self.records
                if r.booked != r.counted
            ],
            "sections": {
                name: {
                    "found": [{"epc": e.epc, "booked_zone": e.booked_zone, "zone": e.seen_zone}
                              for e in entries if e.seen_zone is not None],
                    "not_seen": [{"epc": e.epc, "booked_zone": e.booked_zone}
                                 for e in entries if e.seen_zone is None],
                }
                for name, entries in sorted(self.sections.items())
            },
            "passes": [p.to_dict() for p in self.passes],
        }
        if include_found:
            doc["found"] = sorted(self.found)
        return doc


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC during a bulk reconciliation.

    Reconciling a million items allocates tens of thousands of small tuples; each allocation burst
    triggers collections, and a full one traverses every million-entry set and dict alive in the
    process (measured: ~45% of a 1M-item reconciliation). Nothing here creates cycles, and
    reference counting still frees memory, so pausing is safe; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def recount_book(result: CountResult) -> dict[str, str]:
    """The book of a recount of `result`'s exceptions only: missing and misplaced items where
    they are booked, unexpected ones where they were seen."""
    book = {m.epc: m.booked_zone for m in result.missing}
    book.update((m.epc, m.booked_zone) for m in result.misplaced)
    book.update((u.epc, u.zone) for u in result.unexpected)
    return book


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


class CountSession:
    """A cycle count over `zones` against the book `expected` (epc -> booked zone).

    Entries of `expected` booked outside `zones` are not expected by this count; when seen in a
    counted zone they are reported unexpected with their booked zone. Sightings from zones outside
    the count are accepted: they only reveal where an expected item went (misplaced).
    `record_of` maps an EPC to its SKU (or GTIN) for the accuracy records; None means not a stock
    item. Not thread-safe: feed it from the ingest thread.
    """

    def __init__(
        self,
        zones: Iterable[str],
        expected: Mapping[str, str],
        *,
        record_of: RecordOf | None = None,
        session_id: str = "",
        started_at: float | None = None,
        set_aside: Mapping[str, tuple[str, str | None]] | None = None,
        only: Iterable[str] | None = None,
    ) -> None:
        self.zones: tuple[str, ...] = tuple(sorted(set(zones)))
        if not self.zones:
            raise ValueError("a count needs at least one zone")
        self.session_id = session_id
        self.started_at = time.time() if started_at is None else started_at
        self.finished_at: float | None = None
        self._scope = frozenset(self.zones)
        self._book = expected
        self._aside: Mapping[str, tuple[str, str | None]] = set_aside or {}
        self._only: frozenset[str] | None = None if only is None else frozenset(only)
        self._passes: list[CountPass] = []
        self._record_of: Callable[[str], str | None] | None
        if record_of is None:
            self._record_of = None
        elif isinstance(record_of, Mapping):
            self._record_of = record_of.get
        else:
            self._record_of = record_of
        booked: dict[str, set[str]] = {z: set() for z in self.zones}
        # Booked quantity per (record, zone), counted while walking the book in its own order:
        # lookups in book order hit memory far better than in set order later.
        self._booked_records: Counter[tuple[str | None, str]] = Counter()
        with _gc_paused():
            get = booked.get
            for e, z in expected.items():
                s = get(z)
                if s is not None:
                    s.add(e)
            if self._record_of is not None:
                self._booked_records.update(
                    zip(map(self._record_of, expected.keys()), expected.values(), strict=True)
                )
                for key in [k for k in self._booked_records if k[1] not in self._scope]:
                    del self._booked_records[key]
        self._booked = booked
        if sum(map(len, booked.values())) == len(expected):
            self._in_scope: set[str] | frozenset[str] = set(expected)
        else:
            self._in_scope = set().union(*booked.values())
        self._seen: dict[str, set[str]] = {}
        self._seen_all: set[str] = set()
        self._found_by_zone: Counter[str] = Counter()
        self._located = 0
        self._unexpected_live = 0

    @property
    def expected_count(self) -> int:
        return len(self._in_scope)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def observe_zone(self, zone: str, epcs: Iterable[str]) -> int:
        """Sightings of `epcs` in `zone` (one antenna batch); returns how many were new there."""
        if self.finished_at is not None:
            raise SessionClosedError(f"count session {self.session_id!r} is finished")
        seen_z = self._seen.get(zone)
        if seen_z is None:
            seen_z = self._seen[zone] = set()
        new = set(epcs)
        if self._only is not None:
            new &= self._only
        new -= seen_z
        if not new:
            return 0
        seen_z |= new
        booked_z = self._booked.get(zone)
        if booked_z:
            self._found_by_zone[zone] += len(new & booked_z)
        new_any = new - self._seen_all
        self._seen_all |= new_any
        self._located += len(new_any & self._in_scope)
        if zone in self._scope:
            for e in new - self._in_scope:
                if e in self._aside:
                    continue
                if not any(e in self._seen.get(z, ()) for z in self.zones if z != zone):
                    self._unexpected_live += 1
        return len(new)

    def add_pass(self, zone: str, epcs: Iterable[str], *, device: str | None = None,
                 operator: str | None = None, at: float | None = None) -> CountPass:
        """Merge one handheld pass over `zone`; its summary is kept for the report."""
        read = set(epcs)
        if self._only is not None:
            read &= self._only
        new = self.observe_zone(zone, read)
        p = CountPass(zone, device, operator, at, len(read), new)
        self._passes.append(p)
        return p

    def observe(self, epc: str, zone: str) -> bool:
        return self.observe_zone(zone, (epc,)) == 1

    def not_yet_seen(self, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` expected items no reader has seen yet, as (epc, booked zone), in EPC
        order: the live missing list."""
        missing = sorted(e for e in self._in_scope if e not in self._seen_all)
        return [(e, self._book[e]) for e in missing[:limit]]

    def observe_many(self, sightings: Iterable[tuple[str, str]]) -> int:
        """(epc, zone) pairs in any order; grouped per zone so the set operations stay batched."""
        by_zone: defaultdict[str, list[str]] = defaultdict(list)
        for epc, zone in sightings:
            by_zone[zone].append(epc)
        return sum(self.observe_zone(z, es) for z, es in by_zone.items())

    def counted(self) -> dict[str, str]:
        """epc -> the counted zone each item was seen in (the first, in name order): what a
        closed count books."""
        out: dict[str, str] = {}
        for z in self.zones:
            for e in self._seen.get(z, ()):
                out.setdefault(e, z)
        return out

    def progress(self) -> dict[str, Any]:
        """Live figures, cheap enough to publish every second: "4,812 of 5,000 found"."""
        expected = len(self._in_scope)
        found = sum(self._found_by_zone[z] for z in self.zones)
        return {
            "expected": expected,
            "found": found,
            "misplaced": self._located - found,
            "not_yet_seen": expected - self._located,
            "unexpected": self._unexpected_live,
            "zones": {
                z: {"expected": len(self._booked[z]), "found": self._found_by_zone[z]}
                for z in self.zones
            },
        }

    def finish(self, at: float | None = None) -> CountResult:
        """Stop the count and reconcile (finishing twice returns the same result)."""
        if self.finished_at is None:
            self.finished_at = time.time() if at is None else at
        with _gc_paused():
            return self._reconcile()

    def _reconcile(self) -> CountResult:
        assert self.finished_at is not None
        seen, seen_all, scope = self._seen, self._seen_all, self._scope
        empty: set[str] = set()
        found_parts: list[set[str]] = []
        missing: list[Missing] = []
        misplaced_epcs: list[tuple[str, str]] = []
        for z in self.zones:
            booked_z = self._booked[z]
            seen_z = seen.get(z, empty)
            found_parts.append(booked_z & seen_z)
            not_here = booked_z - seen_z
            elsewhere = not_here & seen_all
            missing.extend(Missing(e, z) for e in not_here - elsewhere)
            misplaced_epcs.extend((e, z) for e in elsewhere)
        found: frozenset[str] = frozenset().union(*found_parts)

        # Where a misplaced item was seen: a counted zone first (it was counted there), then
        # any other, each in name order, so the answer does not depend on read order.
        zone_order = list(self.zones) + sorted(z for z in seen if z not in scope)
        misplaced: list[Misplaced] = []
        for e, booked_zone in misplaced_epcs:
            where = next(z for z in zone_order if e in seen.get(z, empty))
            misplaced.append(Misplaced(e, booked_zone, where))

        extra: dict[str, str] = {}
        for z in self.zones:
            for e in seen.get(z, empty) - self._in_scope:
                extra.setdefault(e, z)
        sections = self._sections(zone_order, extra)
        for e in [e for e in extra if e in self._aside]:
            del extra[e]
        unexpected: list[Unexpected] = []
        unidentified: list[str] = []
        record_of = self._record_of
        for e, z in extra.items():
            if record_of is not None and record_of(e) is None:
                unidentified.append(e)
            else:
                unexpected.append(Unexpected(e, z, self._book.get(e)))

        missing.sort()
        misplaced.sort()
        unexpected.sort()
        unidentified.sort()

        per_zone = self._tally(found_parts, missing, misplaced, unexpected)
        records = self._records(missing, misplaced, unexpected)
        accuracy = self._accuracy(len(found), records)
        return CountResult(
            session_id=self.session_id,
            zones=self.zones,
            started_at=self.started_at,
            finished_at=self.finished_at,
            expected=len(self._in_scope),
            found=found,
            missing=tuple(missing),
            misplaced=tuple(misplaced),
            unexpected=tuple(unexpected),
            unidentified=tuple(unidentified),
            per_zone=per_zone,
            records=records,
            accuracy=accuracy,
            distinct_sightings=sum(map(len, seen.values())),
            sections=sections,
            passes=tuple(self._passes),
        )

    def _sections(self, zone_order: list[str], extra: Mapping[str, str]
                  ) -> dict[str, tuple[SectionEntry, ...]]:
        """Set-aside items booked in a counted zone (found anywhere, or not seen), and those
        booked elsewhere but seen in a counted zone."""
        out: dict[str, list[SectionEntry]] = {}
        empty: set[str] = set()
        for e, (section, booked) in self._aside.items():
            if booked in self._scope:
                where = next((z for z in zone_order if e in self._seen.get(z, empty)), None)
            elif e in extra:
                where = extra[e]
            else:
                continue
            out.setdefault(section, []).append(SectionEntry(e, booked, where))
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def _tally(
        self,
        found_parts: list[set[str]],
        missing: list[Missing],
        misplaced: list[Misplaced],
        unexpected: list[Unexpected],
    ) -> dict[str, ZoneTally]:
        miss = Counter(m.booked_zone for m in missing)
        out_ = Counter(m.booked_zone for m in misplaced)
        in_ = Counter(m.found_zone for m in misplaced)
        unexp = Counter(u.zone for u in unexpected)
        return {
            z: ZoneTally(
                expected=len(self._booked[z]),
                found=len(found_parts[i]),
                missing=miss[z],
                misplaced_out=out_[z],
                misplaced_in=in_[z],
                unexpected=unexp[z],
            )
            for i, z in enumerate(self.zones)
        }

    def _records(
        self, missing: list[Missing], misplaced: list[Misplaced], unexpected: list[Unexpected]
    ) -> tuple[RecordCount, ...]:
        """Booked vs counted per SKU x counted zone, from the book corrected by the exceptions."""
        record_of = self._record_of
        if record_of is None:
            return ()
        booked = self._booked_records
        counted = booked.copy()
        for m in missing:
            counted[(record_of(m.epc), m.booked_zone)] -= 1
        for mp in misplaced:
            r = record_of(mp.epc)
            counted[(r, mp.booked_zone)] -= 1
            if mp.found_zone in self._scope:
                counted[(r, mp.found_zone)] += 1
        for u in unexpected:
            counted[(record_of(u.epc), u.zone)] += 1
        keys = {k for k in booked.keys() | counted.keys() if k[0] is not None}
        return tuple(
            sorted(
                RecordCount(r, z, booked[(r, z)], counted[(r, z)])
                for r, z in keys
                if r is not None
            )
        )

    def _accuracy(self, found: int, records: tuple[RecordCount, ...]) -> Accuracy:
        item = _ratio(found, len(self._in_scope))
        if not records:
            return Accuracy(item, None, None, None, 0, 0)
        accurate = sum(1 for r in records if r.booked == r.counted)
        by_sku_booked: Counter[str] = Counter()
        by_sku_counted: Counter[str] = Counter()
        for r in records:
            by_sku_booked[r.record] += r.booked
            by_sku_counted[r.record] += r.counted
        skus = by_sku_booked.keys() | by_sku_counted.keys()
        sku_ok = sum(1 for s in skus if by_sku_booked[s] == by_sku_counted[s])
        total_booked = sum(r.booked for r in records)
        total_counted = sum(r.counted for r in records)
        aggregate = (
            max(0.0, 1 - abs(total_counted - total_booked) / total_booked) if total_booked else None
        )
        return Accuracy(
            item=item,
            record=accurate / len(records),
            sku=sku_ok / len(skus),
            aggregate=aggregate,
            records=len(records),
            accurate_records=accurate,
        )
