"""Per-item location from tag reads: which zone each item is in, and when that changes.

The tracker sees every read of the site (20 readers x ~1,100 reads/s), so the common case — an
item read again in the zone it is already in — only bumps counters and its place in the
recency order. Everything else is O(1) per read too: per item a 56-byte record in one array
and, only for items straddling zones, a small dict of the other zones that see it.

Zone choice: an item is in the zone of the read point that sees it, smoothed by RSSI. To move to
another zone, the new zone's EWMA-smoothed RSSI must beat the current zone's by `move_margin_db`,
a margin that decays linearly to 0 as the current zone goes `move_margin_decay_s` without seeing
the item; once the current zone has not seen it for that long, any other zone that sees it wins
(a stale RSSI must not pin an item to a zone it has left). Reads without RSSI count as equal
strength, so such items move only when the margin has decayed (or is configured to 0).
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from itertools import repeat
from operator import add, and_, attrgetter
from typing import NamedTuple

from inventory.presence_keys import Key, epc_key, epc_keys, epc_of


class ZoneRead(NamedTuple):
    """A tag read mapped to its zone (read point -> zone is the caller's config lookup).

    A NamedTuple (immutable, typed) rather than a frozen dataclass: the ingest makes one per
    read, and a tuple is built in about 0.3 µs where the dataclass took 0.7."""

    epc: str
    zone: str
    rssi_dbm: float | None
    seen_at: float
    count: int = 1  # type: ignore[assignment]  # shadows tuple.count, a method no read needs


class ChangeKind(enum.StrEnum):
    ARRIVED = "arrived"
    MOVED = "moved"
    DEPARTED = "departed"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """`zone` is where the item is after the change (None once departed), `from_zone` where it
    was before (None on arrival). `at` is the time of the evidence: the first read on arrival,
    the deciding read on a move, the last read on departure (so it is independent of when the
    sweep ran, and event ids built from it are stable)."""

    kind: ChangeKind
    epc: str
    zone: str | None
    from_zone: str | None
    at: float


@dataclass(frozen=True, slots=True)
class PresenceRow:
    """An item's presence as persisted and restored after a restart."""

    epc: str
    zone: str
    since: float
    last_seen: float
    read_count: int = 0
    rssi_dbm: float | None = None


class _Seen:
    """Another zone that sees an item: its EWMA RSSI and last read."""

    __slots__ = ("rssi", "seen")

    def __init__(self, rssi: float | None, seen: float) -> None:
        self.rssi = rssi
        self.seen = seen


class _Pending:
    """Reads of a not-yet-present item in one zone during one batch."""

    __slots__ = ("count", "first", "last", "n_rssi", "rssi_max", "rssi_sum")

    def __init__(self, t: float) -> None:
        self.rssi_sum = 0.0
        self.rssi_max = -1e9
        self.n_rssi = 0
        self.count = 0
        self.first = t
        self.last = t

    @property
    def rssi(self) -> float | None:
        return self.rssi_sum / self.n_rssi if self.n_rssi else None


_NO_RSSI = float("nan")
"""An absent RSSI in a record (a NaN read is taken as no RSSI: it compares as nothing)."""

# One item's record in `PresenceTracker._rec`, `_STRIDE` doubles. All doubles: counts and
# batch numbers are exact up to 2**53, zone indexes far below. `_ORDER` is the tracker's clock
# when the item last took its place at the end of the recency order. The item's last read in
# any zone is not stored: it is the latest of `_ZONE_SEEN` and the other zones' (`_last_seen`).
_ZONE, _ZONE_SEEN, _RSSI, _COUNT, _BATCH, _SINCE, _ORDER = range(7)
_STRIDE = 7
# Records live in pages of `_PAGE`; an item's place in its page is its key's hash modulo
# `_PAGE`, so the dict maps a key to its page's base offset, one int shared by the page's items
# (a boxed int per item would be another 32 bytes of a million-item store).
_PAGE = 256
_MASK = _PAGE - 1
_POS = [p * _STRIDE for p in range(_PAGE)]  # place in the page -> offset from the page base
_EMPTY_PAGE = array("d", bytes(8 * _STRIDE * _PAGE))
_seen_at = attrgetter("seen_at")


class PresenceTracker:
    """Turns zone reads into arrivals, moves and departures. Not thread-safe: one ingest thread.

    `rssi_alpha` is the EWMA weight of a new RSSI sample. A zone's smoothing restarts when it
    has not seen the item for `move_margin_decay_s` (an old reading says nothing about now).

    Memory (a store holds up to a million items): one dict key -> record page, the key being
    the EPC's bytes (`presence_keys`), and each item's record — zone index, times, RSSI, read
    count, batch — as seven doubles side by side in one `array` (56 bytes: a re-read at a
    million items costs a few cache misses, not one per boxed field), at a place in its page
    fixed by its key's hash. Records of departed items are reused; other zones that see an item
    are kept only for items straddling zones.

    The dict is in recency order, coarsely: an item read again goes to the end only if it last
    went there more than `_order_slack_s` ago (re-inserting on every read was a quarter of a
    re-read's cost), so an item's last read is at most that slack after its `_ORDER`. The
    departure sweep walks from the front and stops at the first item placed after the cutoff:
    O(departures + items read just once within the slack), not O(items).
    """

    def __init__(
        self,
        departure_s: float,
        move_margin_db: float,
        move_margin_decay_s: float,
        rssi_alpha: float = 0.3,
    ) -> None:
        if departure_s <= 0:
            raise ValueError(f"departure_s must be > 0, got {departure_s}")
        if move_margin_db < 0:
            raise ValueError(f"move_margin_db must be >= 0, got {move_margin_db}")
        if move_margin_decay_s <= 0:
            raise ValueError(f"move_margin_decay_s must be > 0, got {move_margin_decay_s}")
        if not 0 < rssi_alpha <= 1:
            raise ValueError(f"rssi_alpha must be in (0, 1], got {rssi_alpha}")
        self.departure_s = departure_s
        self.move_margin_db = move_margin_db
        self.move_margin_decay_s = move_margin_decay_s
        self.rssi_alpha = rssi_alpha
        self._slots: dict[Key, int] = {}  # key -> base offset of its record's page in _rec
        self._rec = array("d")
        # Per place in a page, the base offsets of pages whose record at that place is free.
        self._free: list[list[int]] = [[] for _ in range(_PAGE)]
        self._zones: list[str] = []  # zone index -> name
        self._zone_ix: dict[str, float] = {}  # name -> index (a float: see _rec)
        self._counts: list[int] = []  # items present per zone index
        # Other zones that see an item (offset -> zone -> state): only items straddling zones.
        self._others: dict[int, dict[str, _Seen]] = {}
        self._batch = 0
        self._clock = float("-inf")  # the latest read time processed: `_ORDER`'s clock
        self._order_slack_s = min(departure_s / 16, 60.0)
        self._mark_clocks: dict[int, float] = {}  # marks handed out -> the clock then
        # How far the read that placed an item may lag `_ORDER` (reads of one batch span a
        # little time; a reader's clock may run late): every item's last read is at least
        # its `_ORDER` less this, which is what lets the sweep stop early and still be exact.
        self._lag = 0.0

    # -- records ---------------------------------------------------------------------------------

    def _zone_index(self, zone: str) -> int:
        ix = self._zone_ix.get(zone)
        if ix is None:
            ix = self._zone_ix[zone] = float(len(self._zones))
            self._zones.append(zone)
            self._counts.append(0)
        return int(ix)

    def _offset(self, key: Key) -> int:
        return self._slots[key] + _POS[hash(key) & _MASK]

    def _new_record(self, key: Key, zone: str, since: float, zone_seen: float,
                    rssi: float | None, count: int, batch: float, order: float) -> int:
        """Store a record for `key` (not present) and enter it at the end of the dict; returns
        its offset."""
        zi = self._zone_index(zone)
        rec = (float(zi), zone_seen, _NO_RSSI if rssi is None else rssi,
               float(count), float(batch), since, order)
        place = hash(key) & _MASK
        free = self._free[place]
        if not free:
            self._new_page()
        base = free.pop()
        o = base + _POS[place]
        self._rec[o:o + _STRIDE] = array("d", rec)
        self._counts[zi] += 1
        self._slots[key] = base
        return o

    def _new_page(self) -> None:
        """Room for `_PAGE` more records: every place in the new page is free. A page is only
        made when a key's place is taken in every page, so pages stay nearly full (hashes
        spread keys evenly: at a million items ~5 % of the records are spare)."""
        base = len(self._rec)
        self._rec.extend(_EMPTY_PAGE)
        for free in self._free:
            free.append(base)

    def _drop(self, key: Key) -> int:
        """Forget an item; returns the zone index it was in."""
        base = self._slots.pop(key)
        place = hash(key) & _MASK
        o = base + _POS[place]
        zi = int(self._rec[o + _ZONE])
        self._counts[zi] -= 1
        self._others.pop(o, None)
        self._free[place].append(base)
        return zi

    def _last_seen(self, o: int) -> float:
        """The item's last read in any zone: its zone's, or a later one of another zone."""
        last = self._rec[o + _ZONE_SEEN]
        others = self._others.get(o)
        if others:
            for st in others.values():
                if st.seen > last:
                    last = st.seen
        return last

    def _rssi_at(self, o: int) -> float | None:
        v = self._rec[o + _RSSI]
        return None if v != v else v

    # -- reads ---------------------------------------------------------------------------------

    def keys(self, epcs: list[str]) -> list[Key]:
        """The tracker's keys of a batch's EPCs (for `known_keys` and `observe`)."""
        return epc_keys(epcs)

    def known_keys(self, keys: list[Key]) -> list[bool]:
        """`epc in tracker` for each key of a reader's batch, in C loops. At a million items a
        lookup is three dependent cache misses (index, entry, key); hashing every key first
        leaves the lookup loop so little work that the CPU overlaps several lookups' misses
        (measured: 480 -> 280 ns a lookup)."""
        sum(map(hash, keys))  # the keys cache their hash
        return list(map(self._slots.__contains__, keys))

    def observe(self, reads: Iterable[ZoneRead],
                keys: list[Key] | None = None) -> list[PresenceChange]:
        """Apply a batch of reads; returns moves (in read order), then arrivals by (time, EPC).
        `keys`, if given, are `self.keys` of the reads' EPCs (the ingest has them already).

        Items first seen in this batch arrive once, in the zone that saw them best over the
        whole batch, at their earliest read: the outcome does not depend on read order.
        """
        self._batch += 1
        batch = float(self._batch)  # compared with the records' doubles: no int/float mix
        slots = self._slots
        get = slots.get
        pop = slots.pop
        zone_ix = self._zone_ix
        rec = self._rec
        alpha = self.rssi_alpha
        decay_s = self.move_margin_decay_s
        changes: list[PresenceChange] = []
        pending: dict[Key, dict[str, _Pending]] | None = None
        last_zone: str | None = None
        zi = -1.0
        if not isinstance(reads, list):
            reads = list(reads)
        # Look every key up, then touch every record, in C loops before the Python loop: at a
        # million items each lookup and record is a cache miss, and a tight C loop lets the CPU
        # overlap them (the Python loop then finds them in cache) instead of paying each in turn.
        # An unknown key's "offset" is junk (its base is -1), not used but for that touch.
        if keys is None:
            keys = epc_keys([r.epc for r in reads])
            sum(map(hash, keys))  # see known_keys
        bases = list(map(get, keys, repeat(-1)))
        offsets = list(map(add, bases, map(_POS.__getitem__,
                                           map(and_, map(hash, keys), repeat(_MASK)))))
        if rec:
            sum(map(rec.__getitem__, offsets))
        clock = self._clock
        if reads:
            latest = max(map(_seen_at, reads))
            if latest > clock:  # never back (a NaN time is no time)
                clock = self._clock = latest
        slack = self._order_slack_s
        for r, key, base, o in zip(reads, keys, bases, offsets, strict=True):
            if base < 0:
                if pending is None:
                    pending = {}
                _pend(pending, key, r)
                continue
            t = r.seen_at
            rec[o + 3] += r.count  # _COUNT
            if rec[o + 4] != batch:  # _BATCH: the first read of the item in this batch
                rec[o + 4] = batch
                if clock - rec[o + 6] > slack:  # _ORDER: to the end of the recency order
                    rec[o + 6] = clock
                    slots[key] = pop(key)
                    if clock - t > self._lag:
                        self._lag = clock - t
            zone = r.zone
            if zone is not last_zone:  # a reader's batch shares one zone string
                last_zone = zone
                zi = zone_ix.get(zone, -1.0)
            if rec[o] == zi:  # _ZONE; the hot path: a counter bump and a smoothing step
                seen = rec[o + 1]  # _ZONE_SEEN
                rssi = r.rssi_dbm
                if rssi is not None and rssi == rssi:
                    cur = rec[o + 2]  # _RSSI
                    if cur != cur or t - seen > decay_s:
                        rec[o + 2] = rssi
                    else:
                        rec[o + 2] = cur + alpha * (rssi - cur)
                if t > seen:
                    rec[o + 1] = t
            else:
                last_zone = None  # a move may have given the zone its index just now
                change = self._other_zone(r.epc, o, r)
                if change is not None:
                    changes.append(change)
        if pending:
            changes.extend(self._arrive(pending, batch, clock))
        return changes

    def _other_zone(self, epc: str, o: int, r: ZoneRead) -> PresenceChange | None:
        t = r.seen_at
        zone = r.zone
        rssi = r.rssi_dbm
        if rssi is not None and rssi != rssi:
            rssi = None
        decay_s = self.move_margin_decay_s
        others = self._others.get(o)
        if others is None:
            others = self._others[o] = {}
        st = others.get(zone)
        if st is None or t - st.seen > decay_s:
            st = others[zone] = _Seen(rssi, t)
        else:
            if rssi is not None:
                cur = st.rssi
                st.rssi = rssi if cur is None else cur + self.rssi_alpha * (rssi - cur)
            if t > st.seen:
                st.seen = t
        rec = self._rec
        zone_seen = rec[o + _ZONE_SEEN]
        elapsed = t - zone_seen
        if elapsed < decay_s:
            margin = self.move_margin_db * (1.0 - elapsed / decay_s if elapsed > 0 else 1.0)
            new, cur = st.rssi, self._rssi_at(o)
            diff = 0.0 if new is None or cur is None else new - cur
            if diff < margin:
                return None
        # Move: the current zone becomes one of the others, so the item can move back.
        old_ix = int(rec[o + _ZONE])
        old = self._zones[old_ix]
        others[old] = _Seen(self._rssi_at(o), zone_seen)
        del others[zone]
        new_ix = self._zone_index(zone)
        rec[o + _ZONE] = new_ix
        rec[o + _RSSI] = _NO_RSSI if st.rssi is None else st.rssi
        rec[o + _ZONE_SEEN] = st.seen
        rec[o + _SINCE] = t
        self._counts[old_ix] -= 1
        self._counts[new_ix] += 1
        return PresenceChange(ChangeKind.MOVED, epc, zone, old, t)

    def _arrive(self, pending: dict[Key, dict[str, _Pending]], batch: float,
                clock: float) -> list[PresenceChange]:
        arrivals: list[PresenceChange] = []
        for key, zones in pending.items():
            zone = _best_zone(zones)
            s = zones[zone]
            first = min(p.first for p in zones.values())
            last = max(p.last for p in zones.values())
            o = self._new_record(key, zone, first, s.last, s.rssi,
                                 sum(p.count for p in zones.values()), batch, clock)
            if clock - last > self._lag:
                self._lag = clock - last
            if len(zones) > 1:
                self._others[o] = {z: _Seen(p.rssi, p.last)
                                   for z, p in zones.items() if z != zone}
            arrivals.append(PresenceChange(ChangeKind.ARRIVED, epc_of(key), zone, None, first))
        arrivals.sort(key=lambda c: (c.at, c.epc))
        return arrivals

    # -- time ----------------------------------------------------------------------------------

    def sweep(self, now: float, paused_zones: Collection[str] = ()) -> list[PresenceChange]:
        """Departures of items unseen by any zone for more than `departure_s` before `now`.

        Walks the recency order from the front and stops at the first item placed there late
        enough that it and all after it were read since the cutoff, so a sweep costs
        O(departures + items read just once in the slack), not O(items); departures come in
        that order. Exact whatever the reads' times: a reader whose clock runs late only makes
        the walk longer (by the items placed within its lag).

        `paused_zones`: zones whose readers are offline. Their items are not departed (a reader
        outage is not 20,000 items leaving) and keep their place in the read order, which
        `touched_since` relies on: the walk steps over them (O(stale paused items) per sweep).
        """
        cutoff = now - self.departure_s
        rec = self._rec
        paused = {self._zone_ix[z] for z in paused_zones if z in self._zone_ix}
        gone: list[tuple[Key, float]] = []
        limit = cutoff + self._lag  # from here on, every item was read at or after the cutoff
        for key, base in self._slots.items():
            o = base + _POS[hash(key) & _MASK]
            if rec[o + _ORDER] >= limit:
                break
            last = self._last_seen(o)
            if not last >= cutoff and not (paused and rec[o + _ZONE] in paused):
                gone.append((key, last))
        changes: list[PresenceChange] = []
        departed = ChangeKind.DEPARTED
        zones = self._zones
        for key, last in gone:
            zone = zones[self._drop(key)]
            changes.append(PresenceChange(departed, epc_of(key), None, zone, last))
        return changes

    # -- state ---------------------------------------------------------------------------------

    def restore(self, rows: Iterable[object]) -> list[str]:
        """Replace the state with persisted rows (after a restart): no arrivals are emitted.

        A row is a `PresenceRow`, any object with `epc`, `zone`, `last_seen` (and optionally
        `since`, `read_count`, `rssi_dbm`) such as the store's row, or a tuple
        `(epc, zone, last_seen)`. Unusable rows are skipped, not fatal: the returned list says
        which and why (the item simply arrives again on its next read).
        """
        self._slots.clear()
        self._others.clear()
        for free in self._free:
            free.clear()
        del self._rec[:]
        self._counts = [0] * len(self._zones)
        self._mark_clocks.clear()
        self._lag = 0.0
        loaded: list[PresenceRow] = []
        problems: list[str] = []
        for i, row in enumerate(rows):
            try:
                loaded.append(_restored(row))
            except (TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append(f"presence row {i} ({row!r}): {exc}")
        loaded.sort(key=lambda p: p.last_seen)
        slots = self._slots
        for p in loaded:
            key = epc_key(p.epc)
            if key in slots:
                self._drop(key)
                problems.append(f"presence row for {p.epc}: duplicate, kept the latest")
            self._new_record(key, p.zone, p.since, p.last_seen, p.rssi_dbm, p.read_count, 0,
                             p.last_seen)
        if loaded and loaded[-1].last_seen > self._clock:
            self._clock = loaded[-1].last_seen
        return problems

    def snapshot(self) -> list[PresenceRow]:
        """Every present item, least recently read first (to the recency order's slack)."""
        row = self._row
        return [row(key, base) for key, base in self._slots.items()]

    @property
    def mark(self) -> int:
        """The number of the last observed batch; pass it to `touched_since` later."""
        marks = self._mark_clocks
        if self._batch not in marks:
            if len(marks) >= 32:
                del marks[next(iter(marks))]
            marks[self._batch] = self._clock
        return self._batch

    def _order_floor(self, mark: int) -> float:
        """A time no item read in a batch after `mark` was placed before: the clock at `mark`
        (or at an earlier mark handed out, the clock never goes back) less the slack; -inf
        when no such mark is remembered (the walk then covers every item)."""
        floor = float("-inf")
        for m, clock in self._mark_clocks.items():
            if m <= mark and clock - self._order_slack_s > floor:
                floor = clock - self._order_slack_s
        return floor

    def touched_since(self, mark: int) -> list[PresenceRow]:
        """Items read in batches after `mark` (a count's sightings)."""
        slots = self._slots
        return [self._row(key, slots[key]) for key in self._touched_keys(mark)]

    def touched_epcs_since(self, mark: int) -> list[str]:
        """EPCs of the items read in batches after `mark`, most recently read first: the
        last-seen flush takes these and writes them a bounded chunk at a time."""
        return list(map(epc_of, self._touched_keys(mark)))

    def _touched_keys(self, mark: int) -> list[Key]:
        """Walks back from the end of the recency order down to `_order_floor(mark)`."""
        out: list[Key] = []
        if mark >= self._batch:
            return out
        slots = self._slots
        rec = self._rec
        floor = self._order_floor(mark)
        for key in reversed(slots):
            o = slots[key] + _POS[hash(key) & _MASK]
            if rec[o + _ORDER] < floor:
                break
            if rec[o + _BATCH] > mark:
                out.append(key)
        return out

    def zone_of(self, epc: str) -> str | None:
        key = epc_key(epc)
        if key not in self._slots:
            return None
        return self._zones[int(self._rec[self._offset(key) + _ZONE])]

    def get(self, epc: str) -> PresenceRow | None:
        key = epc_key(epc)
        base = self._slots.get(key)
        return None if base is None else self._row(key, base)

    def zone_counts(self) -> dict[str, int]:
        """Items present per zone (for metrics and the staff UI)."""
        return {z: n for z, n in zip(self._zones, self._counts, strict=True) if n}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, epc: object) -> bool:
        return epc_key(epc) in self._slots  # type: ignore[arg-type]

    def known(self, epcs: list[str]) -> list[bool]:
        """`epc in tracker` for each EPC of a reader's batch, in C loops (at a million items
        each lookup is a cache miss; a tight loop lets the CPU overlap them)."""
        return list(map(self._slots.__contains__, epc_keys(epcs)))

    def _row(self, key: Key, base: int) -> PresenceRow:
        rec = self._rec
        o = base + _POS[hash(key) & _MASK]
        return PresenceRow(epc_of(key), self._zones[int(rec[o + _ZONE])], rec[o + _SINCE],
                           self._last_seen(o), int(rec[o + _COUNT]), self._rssi_at(o))


def _restored(row: object) -> PresenceRow:
    if isinstance(row, tuple | list):
        if len(row) != 3:
            raise ValueError("a tuple row must be (epc, zone, last_seen)")
        epc, zone, last_seen = row
        since, count, rssi = last_seen, 0, None
    else:
        epc, zone, last_seen = row.epc, row.zone, row.last_seen  # type: ignore[attr-defined]
        since = getattr(row, "since", None)
        count = getattr(row, "read_count", 0) or 0
        rssi = getattr(row, "rssi_dbm", None)
    if not isinstance(epc, str) or not epc:
        raise ValueError(f"epc must be a non-empty string, got {epc!r}")
    if not isinstance(zone, str) or not zone:
        raise ValueError(f"zone must be a non-empty string, got {zone!r}")
    last = float(last_seen)
    if last != last:
        raise ValueError("last_seen is NaN")
    n = int(count)
    if not 0 <= n <= 2**53:
        raise ValueError(f"read_count must be in [0, 2**53], got {n}")
    r = None if rssi is None else float(rssi)
    return PresenceRow(epc, zone, last if since is None else float(since), last, n,
                       None if r is None or r != r else r)


def _pend(pending: dict[Key, dict[str, _Pending]], key: Key, r: ZoneRead) -> None:
    zones = pending.get(key)
    if zones is None:
        zones = pending[key] = {}
    t = r.seen_at
    p = zones.get(r.zone)
    if p is None:
        p = zones[r.zone] = _Pending(t)
    if r.rssi_dbm is not None:
        p.rssi_sum += r.rssi_dbm
        p.n_rssi += 1
        if r.rssi_dbm > p.rssi_max:
            p.rssi_max = r.rssi_dbm
    p.count += r.count
    if t < p.first:
        p.first = t
    if t > p.last:
        p.last = t


def _best_zone(zones: dict[str, _Pending]) -> str:
    """Strongest peak RSSI; if any candidate lacks RSSI they compare equal, so most reads win;
    then the zone name. Peak, count and name are exact (a float mean is not: summation order
    changes its last bit), so the choice never depends on read order."""
    if len(zones) == 1:
        return next(iter(zones))
    if all(p.n_rssi for p in zones.values()):
        return min(zones, key=lambda z: (-zones[z].rssi_max, -zones[z].count, z))
    return min(zones, key=lambda z: (-zones[z].count, z))
