"""Per-item location from tag reads: which zone each item is in, and when that changes.

The tracker sees every read of the site (20 readers x ~1,100 reads/s), so the common case — an
item read again in the zone it is already in — only bumps counters and its place in the
recency order. Everything else is O(1) per read too: per item a handful of floats and, only
for items straddling zones, a small dict of the other zones that see it.

Zone choice: an item is in the zone of the read point that sees it, smoothed by RSSI. To move to
another zone, the new zone's EWMA-smoothed RSSI must beat the current zone's by `move_margin_db`,
a margin that decays linearly to 0 as the current zone goes `move_margin_decay_s` without seeing
the item; once the current zone has not seen it for that long, any other zone that sees it wins
(a stale RSSI must not pin an item to a zone it has left). Reads without RSSI count as equal
strength, so such items move only when the margin has decayed (or is configured to 0).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ZoneRead:
    """A tag read mapped to its zone (read point -> zone is the caller's config lookup)."""

    epc: str
    zone: str
    rssi_dbm: float | None
    seen_at: float
    count: int = 1


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


class _Item:
    __slots__ = ("batch", "count", "last_seen", "others", "rssi", "since", "zone", "zone_seen")

    def __init__(
        self,
        zone: str,
        since: float,
        zone_seen: float,
        last_seen: float,
        rssi: float | None,
        count: int,
        batch: int,
    ) -> None:
        self.zone = zone
        self.since = since
        self.zone_seen = zone_seen  # last read by the current zone
        self.last_seen = last_seen  # last read by any zone
        self.rssi = rssi  # EWMA RSSI in the current zone
        self.count = count
        self.batch = batch
        self.others: dict[str, _Seen] | None = None  # created for items straddling zones


class PresenceTracker:
    """Turns zone reads into arrivals, moves and departures. Not thread-safe: one ingest thread.

    `rssi_alpha` is the EWMA weight of a new RSSI sample. A zone's smoothing restarts when it
    has not seen the item for `move_margin_decay_s` (an old reading says nothing about now).
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
        # Recency order (least recently read first) makes the departure sweep stop early. A
        # plain dict (re-inserting an item moves it to the end) costs ~50 bytes an item less
        # than an OrderedDict: at a million items that is 50 MiB.
        self._items: dict[str, _Item] = {}
        self._zone_counts: Counter[str] = Counter()
        self._batch = 0

    # -- reads ---------------------------------------------------------------------------------

    def observe(self, reads: Iterable[ZoneRead]) -> list[PresenceChange]:
        """Apply a batch of reads; returns moves (in read order), then arrivals by (time, EPC).

        Items first seen in this batch arrive once, in the zone that saw them best over the
        whole batch, at their earliest read: the outcome does not depend on read order.
        """
        self._batch += 1
        batch = self._batch
        items = self._items
        get = items.get
        pop = items.pop
        alpha = self.rssi_alpha
        decay_s = self.move_margin_decay_s
        changes: list[PresenceChange] = []
        pending: dict[str, dict[str, _Pending]] | None = None
        for r in reads:
            epc = r.epc
            it = get(epc)
            if it is None:
                if pending is None:
                    pending = {}
                _pend(pending, r)
                continue
            t = r.seen_at
            it.count += r.count
            if it.batch != batch:  # the first read of the item in this batch
                it.batch = batch
                items[epc] = pop(epc)  # to the end of the recency order
            if t > it.last_seen:
                it.last_seen = t
            if it.zone == r.zone:  # the hot path: a counter bump and a smoothing step
                rssi = r.rssi_dbm
                if rssi is not None:
                    cur = it.rssi
                    if cur is None or t - it.zone_seen > decay_s:
                        it.rssi = rssi
                    else:
                        it.rssi = cur + alpha * (rssi - cur)
                if t > it.zone_seen:
                    it.zone_seen = t
            else:
                change = self._other_zone(epc, it, r)
                if change is not None:
                    changes.append(change)
        if pending:
            changes.extend(self._arrive(pending, batch))
        return changes

    def _other_zone(self, epc: str, it: _Item, r: ZoneRead) -> PresenceChange | None:
        t = r.seen_at
        zone = r.zone
        rssi = r.rssi_dbm
        decay_s = self.move_margin_decay_s
        others = it.others
        if others is None:
            others = it.others = {}
        st = others.get(zone)
        if st is None or t - st.seen > decay_s:
            st = others[zone] = _Seen(rssi, t)
        else:
            if rssi is not None:
                cur = st.rssi
                st.rssi = rssi if cur is None else cur + self.rssi_alpha * (rssi - cur)
            if t > st.seen:
                st.seen = t
        elapsed = t - it.zone_seen
        if elapsed < decay_s:
            margin = self.move_margin_db * (1.0 - elapsed / decay_s if elapsed > 0 else 1.0)
            new, cur = st.rssi, it.rssi
            diff = 0.0 if new is None or cur is None else new - cur
            if diff < margin:
                return None
        # Move: the current zone becomes one of the others, so the item can move back.
        old = it.zone
        others[old] = _Seen(it.rssi, it.zone_seen)
        del others[zone]
        it.zone = zone
        it.rssi = st.rssi
        it.zone_seen = st.seen
        it.since = t
        counts = self._zone_counts
        counts[old] -= 1
        counts[zone] += 1
        return PresenceChange(ChangeKind.MOVED, epc, zone, old, t)

    def _arrive(self, pending: dict[str, dict[str, _Pending]], batch: int) -> list[PresenceChange]:
        arrivals: list[PresenceChange] = []
        items = self._items
        counts = self._zone_counts
        for epc, zones in pending.items():
            zone = _best_zone(zones)
            s = zones[zone]
            first = min(p.first for p in zones.values())
            last = max(p.last for p in zones.values())
            it = _Item(
                zone=zone,
                since=first,
                zone_seen=s.last,
                last_seen=last,
                rssi=s.rssi,
                count=sum(p.count for p in zones.values()),
                batch=batch,
            )
            if len(zones) > 1:
                it.others = {z: _Seen(p.rssi, p.last) for z, p in zones.items() if z != zone}
            items[epc] = it
            counts[zone] += 1
            arrivals.append(PresenceChange(ChangeKind.ARRIVED, epc, zone, None, first))
        arrivals.sort(key=lambda c: (c.at, c.epc))
        return arrivals

    # -- time ----------------------------------------------------------------------------------

    def sweep(self, now: float, paused_zones: Collection[str] = ()) -> list[PresenceChange]:
        """Departures of items unseen by any zone for more than `departure_s` before `now`.

        Walks from the least recently read item and stops at the first one still present, so
        a sweep costs O(departures), not O(items). Reads whose `seen_at` lags the order they were
        processed in (reader clock skew) can delay a departure by that skew, never advance it.

        `paused_zones`: zones whose readers are offline. Their items are not departed (a reader
        outage is not 20,000 items leaving) and keep their place in the read order, which
        `touched_since` relies on: the walk steps over them (O(stale paused items) per sweep).
        """
        cutoff = now - self.departure_s
        items = self._items
        gone: list[str] = []
        for epc, it in items.items():
            if it.last_seen >= cutoff:
                break
            if not (paused_zones and it.zone in paused_zones):
                gone.append(epc)
        changes: list[PresenceChange] = []
        counts = self._zone_counts
        departed = ChangeKind.DEPARTED
        for epc in gone:
            it = items.pop(epc)
            counts[it.zone] -= 1
            changes.append(PresenceChange(departed, epc, None, it.zone, it.last_seen))
        return changes

    # -- state ---------------------------------------------------------------------------------

    def restore(self, rows: Iterable[object]) -> list[str]:
        """Replace the state with persisted rows (after a restart): no arrivals are emitted.

        A row is a `PresenceRow`, any object with `epc`, `zone`, `last_seen` (and optionally
        `since`, `read_count`, `rssi_dbm`) such as the store's row, or a tuple
        `(epc, zone, last_seen)`. Unusable rows are skipped, not fatal: the returned list says
        which and why (the item simply arrives again on its next read).
        """
        self._items.clear()
        self._zone_counts.clear()
        loaded: list[tuple[str, _Item]] = []
        problems: list[str] = []
        for i, row in enumerate(rows):
            try:
                loaded.append(_restored(row))
            except (TypeError, ValueError, AttributeError) as exc:
                problems.append(f"presence row {i} ({row!r}): {exc}")
        loaded.sort(key=lambda pair: pair[1].last_seen)
        for epc, it in loaded:
            old = self._items.pop(epc, None)
            if old is not None:
                self._zone_counts[old.zone] -= 1
                problems.append(f"presence row for {epc}: duplicate, kept the latest")
            self._items[epc] = it
            self._zone_counts[it.zone] += 1
        return problems

    def snapshot(self) -> list[PresenceRow]:
        """Every present item, least recently read first."""
        return [_row(epc, it) for epc, it in self._items.items()]

    @property
    def mark(self) -> int:
        """The number of the last observed batch; pass it to `touched_since` later."""
        return self._batch

    def touched_since(self, mark: int) -> list[PresenceRow]:
        """Items read in batches after `mark` (a count's sightings)."""
        items = self._items
        return [_row(epc, items[epc]) for epc in self.touched_epcs_since(mark)]

    def touched_epcs_since(self, mark: int) -> list[str]:
        """EPCs of the items read in batches after `mark`, most recently read first: the
        last-seen flush takes these and writes them a bounded chunk at a time."""
        items = self._items
        out: list[str] = []
        for epc in reversed(items):
            if items[epc].batch <= mark:
                break
            out.append(epc)
        return out

    def zone_of(self, epc: str) -> str | None:
        it = self._items.get(epc)
        return None if it is None else it.zone

    def get(self, epc: str) -> PresenceRow | None:
        it = self._items.get(epc)
        return None if it is None else _row(epc, it)

    def zone_counts(self) -> dict[str, int]:
        """Items present per zone (for metrics and the staff UI)."""
        return {z: n for z, n in self._zone_counts.items() if n}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, epc: object) -> bool:
        return epc in self._items


def _restored(row: object) -> tuple[str, _Item]:
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
    it = _Item(
        zone=zone,
        since=last if since is None else float(since),
        zone_seen=last,
        last_seen=last,
        rssi=None if rssi is None else float(rssi),
        count=int(count),
        batch=0,
    )
    return epc, it


def _row(epc: str, it: _Item) -> PresenceRow:
    return PresenceRow(epc, it.zone, it.since, it.last_seen, it.count, it.rssi)


def _pend(pending: dict[str, dict[str, _Pending]], r: ZoneRead) -> None:
    zones = pending.get(r.epc)
    if zones is None:
        zones = pending[r.epc] = {}
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
