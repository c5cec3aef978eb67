"""What the sales floor and the desk learn from the readers, as it happens: an ingest component
that notes (1) an item held for a client arriving at reception or on the sales floor and (2) an
item put on a desk reader (a `pos` zone). The staff page streams both (rfidd.web.floor).

The feed keeps a short, bounded memory (the last notices); it is filled only after the batch
that saw the fact was committed (the plan's `apply`), so a retried commit never notes twice.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rfidd.pipeline import BatchPlan, BatchView

NoticeKind = Literal["held_arrived", "desk_scan"]
ARRIVAL_KINDS = frozenset({"reception", "floor"})
DESK_KIND = "pos"
DESK_REPEAT_S = 10.0  # the same item left on the desk is one scan, not one per batch


@dataclass(frozen=True, slots=True)
class Notice:
    seq: int
    kind: NoticeKind
    epc: str
    zone: str
    zone_kind: str
    at: float
    client: str | None = None


class FloorFeed:
    """An ingest component (rfidd.pipeline.BatchComponent) and the page's source of notices."""

    name = "floor-feed"

    def __init__(self, zone_kinds: Mapping[str, str], keep: int = 50) -> None:
        self.zone_kinds = dict(zone_kinds)
        self.watched_zones = frozenset(z for z, k in self.zone_kinds.items() if k == DESK_KIND)
        self._lock = threading.Lock()  # held for list operations only, never across I/O
        self._notices: deque[Notice] = deque(maxlen=keep)
        self._seq = 0
        self._desk_last: dict[str, float] = {}  # epc -> last desk read (for DESK_REPEAT_S)

    @property
    def has_desk(self) -> bool:
        return bool(self.watched_zones)

    def plan(self, view: BatchView) -> BatchPlan | None:
        found: list[tuple[NoticeKind, str, str, float, str | None]] = []
        for ch in view.changes:
            if ch.zone is None or ch.zone == ch.from_zone:
                continue
            if self.zone_kinds.get(ch.zone) not in ARRIVAL_KINDS:
                continue
            st = view.record(ch.epc)
            if st is not None and st.hold is not None:
                found.append(("held_arrived", ch.epc, ch.zone, ch.at, st.hold.client))
        for epc, zone, at in view.reads_in(self.watched_zones):
            found.append(("desk_scan", epc, zone, at, None))
        if not found:
            return None
        return BatchPlan(apply=lambda: self.note(found))

    def note(self, found: list[tuple[NoticeKind, str, str, float, str | None]]) -> None:
        with self._lock:
            for kind, epc, zone, at, client in found:
                if kind == "desk_scan":
                    last = self._desk_last.get(epc)
                    self._desk_last[epc] = at
                    if len(self._desk_last) > 1000:  # bounded: forget the oldest
                        self._desk_last.pop(next(iter(self._desk_last)))
                    if last is not None and at - last < DESK_REPEAT_S:
                        continue
                self._seq += 1
                self._notices.append(Notice(self._seq, kind, epc, zone,
                                            self.zone_kinds.get(zone, ""), at, client))

    def since(self, seq: int, kind: NoticeKind | None = None) -> list[Notice]:
        """Notices after `seq` (oldest first), of one kind when given."""
        with self._lock:
            return [n for n in self._notices if n.seq > seq and (kind is None or n.kind == kind)]

    def last_seq(self) -> int:
        with self._lock:
            return self._seq
