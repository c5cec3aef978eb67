"""CountingService: cycle counts over zones (staff, a schedule or a timed stop), with live
progress, a reconciled report to HQ, `cycle_counting` events, and the loss tracker fed.

Counts read the tracker, not the change stream: an item read after the count's start mark
(`touched_since`) was seen during the count, in the zone presence settled on. Settled zones
matter: a bag carried from stockroom to floor keeps its stockroom zone until the floor beats it
by the RSSI margin, so a count fed read by read would call it found where it no longer is.

With the lifecycle books (`books`, rfidd/ops/books.py) a count expects sellable stock on the
books, reports holds, pick-ups, returns and repairs in their own sections, merges handheld
passes, books what it found on closing (one EPCIS event per item; a take-over count adopts
items never received) and can recount the exceptions of a finished count.

Threads: API and scheduler calls; the running counts are guarded by the domain-state lock
(ctx.tracker_lock), always taken before a write transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inventory.counting import CountResult, CountSession
from inventory.epc import decode, epc_hex_from_uri
from inventory.events import Action, ItemEvent, stable_event_id
from inventory.reports import to_csv
from rfidd.context import ServiceContext
from rfidd.lifecycle.counts import BookedCount
from rfidd.ops import books as B
from rfidd.ops import store
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import REPORT_STREAM, OpsError, OpsSettings, new_id
from rfidd.ops.exits import ExitService
from rfidd.store import repo

if TYPE_CHECKING:
    from rfidd.lifecycle.service import LifecycleService

log = logging.getLogger("rfidd.ops")

_MISSING = object()


@dataclass
class _Count:
    id: str
    zones: tuple[str, ...]
    trigger: str
    started_at: float
    start_mark: int
    last_mark: int
    book: dict[str, str]
    record_of: Callable[[str], str | None]
    live: CountSession
    ends_at: float | None = None
    sightings: dict[str, str] = field(default_factory=dict)  # epc -> last zone seen
    adopt: bool = False  # a take-over: what it finds goes on the books
    aside: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    only: frozenset[str] | None = None  # a recount: these items only
    recount_of: str | None = None
    passes: list[tuple[str, list[str], str | None, str | None, float]] = field(
        default_factory=list)
    closing: bool = False  # a thread is closing it
    close: _Close | None = None  # the close under way (kept if it failed: resumed)


@dataclass
class _Close:
    """A count's close, planned once: reconciled, then booked chunk by chunk."""

    now: float
    seen: dict[str, str]
    result: CountResult
    counted: dict[str, str]  # epc -> counted zone (what the books get)
    order: list[str]  # counted, in the order the chunks book them
    done: int = 0  # items of `order` booked (committed)
    booked: BookedCount = field(default_factory=BookedCount)


class CountingService:
    """Cycle counts; a finished count feeds the loss tracker of `losses`."""

    def __init__(self, ctx: ServiceContext, catalog: CatalogService, losses: ExitService,
                 settings: OpsSettings | None = None,
                 books: LifecycleService | None = None) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.losses = losses
        self.books = books
        self.settings = settings or OpsSettings()
        self.site_id = ctx.config.site.id
        self.site_sgln = ctx.config.site.sgln
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self._counts: dict[str, _Count] = {}
        self.on_active: Callable[[], None] = lambda: None
        """Called once a count runs (the ops tick resumes: it refreshes and stops counts)."""

    def start(self) -> None:
        """Counts that were running when the daemon stopped cannot resume: mark them aborted."""
        with self.ctx.transaction() as s:
            aborted, partial = store.abort_running_counts(s, time.time())
        if aborted:
            log.warning("ops: counts %s were running when the daemon stopped; marked aborted",
                        ", ".join(aborted))
        for count_id, progress in partial.items():
            log.error("ops: count %s was being closed when the daemon stopped: %s; marked "
                      "partial (its report was not sent; count again)", count_id, progress)

    def stop(self) -> None:
        """Nothing to save: a running count is aborted at the next start."""

    def start_count(self, zones: Sequence[str], trigger: str = "staff",
                    duration_s: float | None = None, adopt: bool = False,
                    book: Mapping[str, str] | None = None,
                    recount_of: str | None = None) -> dict[str, Any]:
        """Start a count over `zones`; the book is the items table as it is now (with the
        lifecycle books: their sellable stock), or `book` for a recount. `adopt`: a take-over
        (also the first count, with `counts.first_count_takes_over`)."""
        zs = tuple(sorted(set(zones)))
        if not zs:
            raise OpsError(400, "zones: give at least one zone to count")
        unknown = [z for z in zs if z not in self.ctx.config.zones]
        if unknown:
            raise OpsError(400, f"zones: unknown zone(s) {', '.join(unknown)} (known: "
                           f"{', '.join(sorted(self.ctx.config.zones))})")
        if duration_s is not None and duration_s <= 0:
            raise OpsError(400, "duration_s: must be > 0")
        self._check_free(zs)
        # The book is read and the live session built outside the domain lock (at 100,000
        # items, a second): the lock is held to check the zones are free, take the mark and
        # register the count.
        now = time.time()
        cid = new_id("cnt", now)
        with self.ctx.db.session() as s:
            full, gtins = store.load_book(s)
            booked, aside = B.count_book(self.books, s, full)
            adopt = adopt or B.first_count_adopts(self.books, s)
        only = None if book is None else frozenset(book)
        if only is not None:  # a recount: the exceptions only
            booked = dict(book or {})
            aside = {e: a for e, a in aside.items() if e in only}
        records = {e: self.catalog.record(g) for e, g in gtins.items()}
        book = {e: z for e, z in booked.items() if records.get(e, e) is not None}

        def record_of(epc: str, _r: dict[str, str | None] = records) -> str | None:
            r = _r.get(epc, _MISSING)
            return self.catalog.record_of(epc) if r is _MISSING else r  # type: ignore[return-value]

        live = CountSession(zs, book, record_of=record_of, session_id=cid, started_at=now,
                            set_aside=aside, only=only)
        with self._lock:
            self._check_free(zs)
            mark = self.ctx.tracker.mark
            count = _Count(cid, zs, trigger, now, mark, mark, book, record_of, live,
                           ends_at=None if duration_s is None else now + duration_s,
                           adopt=adopt, aside=aside, only=only, recount_of=recount_of)
            with self.ctx.transaction() as s:
                store.insert_count(s, cid, zs, trigger, now, live.expected_count)
            self._counts[cid] = count
        self.on_active()
        log.info("ops: count %s started over %s (%d expected, %s)", cid, ", ".join(zs),
                 live.expected_count, trigger)
        return self._count_progress(count)

    def _check_free(self, zs: tuple[str, ...]) -> None:
        with self._lock:
            busy = [c.id for c in self._counts.values() if set(c.zones) & set(zs)]
        if busy:
            raise OpsError(409, f"zones: count {busy[0]} is already running over "
                           "some of these zones")

    def _refresh(self, count: _Count) -> None:
        with self.ctx.tracker_lock:
            rows = self.ctx.tracker.touched_since(count.last_mark)
            count.last_mark = self.ctx.tracker.mark
        pairs = [(r.epc, r.zone) for r in rows]
        count.sightings.update(pairs)
        count.live.observe_many(pairs)

    def _count_progress(self, count: _Count) -> dict[str, Any]:
        return {"session_id": count.id, "status": "running", "zones": list(count.zones),
                "trigger": count.trigger, "adopt": count.adopt, "recount_of": count.recount_of,
                "started_at": count.started_at,
                "ends_at": count.ends_at, "progress": count.live.progress()}

    def count(self, cid: str) -> dict[str, Any]:
        """Live progress of a running count, or the stored report of a finished one."""
        with self._lock:
            c = self._counts.get(cid)
            if c is not None:
                self._refresh(c)
                return self._count_progress(c)
        with self.ctx.db.session() as s:
            doc = store.count_report(s, cid)
            status = store.count_status(s, cid)
        if status is None:
            raise OpsError(404, f"unknown count session {cid}")
        return {"session_id": cid, "status": status, "report": doc}

    def count_missing(self, cid: str, limit: int = 200) -> list[dict[str, Any]]:
        """A running count's items not yet seen, with their product (the page's live list)."""
        with self._lock:
            c = self._counts.get(cid)
            if c is None:
                return []
            self._refresh(c)
            missing = c.live.not_yet_seen(limit)
        out = []
        for epc, zone in missing:
            g = self.catalog.gtin_of(epc)
            p = self.catalog.catalog.get(g) if g else None
            out.append({"epc": epc, "zone": zone, **(p.to_dict() if p else {"gtin": g})})
        return out

    def counts(self) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            rows = store.count_rows(s)
        with self._lock:
            for r in rows:
                c = self._counts.get(r["session_id"])
                if c is not None:
                    self._refresh(c)
                    r["progress"] = c.live.progress()
        return rows

    def add_pass(self, cid: str, zone: str, epcs: Sequence[str], device: str | None = None,
                 operator: str | None = None) -> dict[str, Any]:
        """Merge one handheld pass (the EPCs read over `zone`) into a running count."""
        if zone not in self.ctx.config.zones:
            raise OpsError(400, f"zone: unknown zone {zone!r}")
        hexes = []
        for i, raw in enumerate(epcs):
            text = str(raw).strip()
            try:
                d = decode(epc_hex_from_uri(text) if text.lower().startswith("urn:") else text)
            except ValueError as exc:
                raise OpsError(400, f"epcs[{i}]: {raw!r} is not an EPC ({exc})") from None
            if not d.ok:
                raise OpsError(400, f"epcs[{i}]: {raw!r} is not an EPC ({d.error})")
            hexes.append(d.hex)
        with self._lock:
            c = self._counts.get(cid)
            if c is None:
                raise OpsError(404, f"count {cid} is not running")
            if c.closing or c.close is not None:
                raise OpsError(409, f"count {cid} is being closed: its passes are taken")
            now = time.time()
            p = c.live.add_pass(zone, hexes, device=device, operator=operator, at=now)
            c.passes.append((zone, hexes, device, operator, now))
            return {**self._count_progress(c), "pass": p.to_dict()}

    def recount(self, cid: str, duration_s: float | None = None) -> dict[str, Any]:
        """A new count of the exceptions (missing, misplaced, unexpected) of count `cid`."""
        with self.ctx.db.session() as s:
            doc = store.count_report(s, cid)
        if doc is None:
            raise OpsError(404, f"no finished count {cid}")
        book = {m["epc"]: m["booked_zone"] for m in doc["missing"]}
        book.update((m["epc"], m["booked_zone"]) for m in doc["misplaced"])
        book.update((u["epc"], u["zone"]) for u in doc["unexpected"])
        if not book:
            raise OpsError(409, f"count {cid} has no exceptions to recount")
        return self.start_count(doc["zones"], trigger="recount", duration_s=duration_s,
                                book=book, recount_of=cid)

    def start_mark(self, cid: str) -> int:
        """The tracker mark a running count reads from (tests wait on it)."""
        with self._lock:
            return self._counts[cid].start_mark

    def busy(self) -> bool:
        """A count runs (read without the lock: the ops tick's pause check takes none)."""
        return bool(self._counts)

    def running_counts(self) -> list[str]:
        with self._lock:
            return list(self._counts)

    def stop_count(self, cid: str | None = None) -> dict[str, Any]:
        """Finish a count: reconcile, cycle_counting events, report to HQ, loss tracker.

        The domain lock is held only briefly: to take the sightings, then for each chunk of
        the books (`settings.apply_chunk` items, each its own transaction, giving way to the
        ingest between chunks), then for the report. Until the report commits, the count is
        `closing` in the database with how many items are booked: a crash in between leaves
        it visibly partial (marked so at the next start); a failure here keeps the plan, and
        stopping again resumes from the next chunk (same events, same ids)."""
        with self._lock:
            if cid is None:
                if len(self._counts) != 1:
                    raise OpsError(409 if self._counts else 404,
                                   "session_id: give the count to stop (running: "
                                   f"{', '.join(self._counts) or 'none'})")
                cid = next(iter(self._counts))
            c = self._counts.get(cid)
            if c is None:
                raise OpsError(404, f"count {cid} is not running")
            if c.closing:
                raise OpsError(409, f"count {cid} is being closed")
            c.closing = True
            taken = None
            if c.close is None:
                # The reads since the last refresh only (the tick refreshes live counts every
                # few seconds: `sightings` is each item's zone at its latest read, kept after it
                # departs), not all the count's reads again: at 100,000 items that was a fifth
                # of a second held.
                now = time.time()
                self._refresh(c)
                taken = (now, dict(c.sightings))
        try:
            if taken is not None:
                now, seen = taken
                c.close = self._close_plan(c, now, seen)
            return self._close(c)
        finally:
            c.closing = False

    def _close_plan(self, c: _Count, now: float, seen: dict[str, str]) -> _Close:
        """Reconcile (outside the lock: the sightings are copied)."""
        final = CountSession(c.zones, c.book, record_of=c.record_of, session_id=c.id,
                             started_at=c.started_at, set_aside=c.aside, only=c.only)
        final.observe_many(seen.items())
        for zone, epcs, device, operator, at in c.passes:
            final.add_pass(zone, epcs, device=device, operator=operator, at=at)
        result = final.finish(at=now)
        counted = final.counted() if self.books is not None else {}
        return _Close(now, seen, result, counted, sorted(counted))

    def _close(self, c: _Count) -> dict[str, Any]:
        p = c.close
        assert p is not None
        n = max(1, self.settings.apply_chunk)
        while p.done < len(p.order):  # the books, chunk by chunk
            assert self.books is not None
            part = {e: p.counted[e] for e in p.order[p.done:p.done + n]}
            with self.ctx.db.session() as s:  # planned without the lock...
                planned = B.plan_chunk(self.books, s, c.id, part, adopt=c.adopt, at=p.now)
            with self._lock, self.ctx.transaction() as s:  # ...written if nothing changed
                B.book_chunk(self.books, s, c.id, part, adopt=c.adopt, at=p.now,
                             out=p.booked, planned=planned)
                store.closing_count(s, c.id, p.done + len(part), len(p.order))
            p.done += len(part)
            self._lock.give_way()
        result, now = p.result, p.now
        # The report is built and serialised outside the lock (a take-over of 100,000 items
        # lists each one); only the loss tracker's part is added under it.
        doc = self._count_doc(result, c, (), ())
        del doc["shrinkage"]
        if self.books is not None:
            doc["books"] = p.booked.to_dict()
        events = self._count_events(result, p.seen) if self.books is None else []
        head = store.dumps(doc)
        with self._lock:
            loss_before = self.losses.loss_state()  # restored if the commit fails: no double count
            update = self.losses.record_count(result, at=now)
            doc["shrinkage"] = {"newly_suspected": [s.to_dict() for s in update.newly_suspected],
                                "reinstated": list(update.reinstated)}
            text = f'{head[:-1]},"shrinkage":{store.dumps(doc["shrinkage"])}}}'
            message = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "count"), text,
                                   event_id=stable_event_id(self.site_id, "count_report", c.id))
            try:
                with self.ctx.transaction() as s:
                    self.ctx.stage(s, events, [message])
                    store.finish_count(s, c.id, now, doc,
                                       None if c.adopt else result.accuracy.record, text=text)
                    self.losses.save_loss_state(s, now)
            except Exception:
                self.losses.restore_loss_state(loss_before)
                raise
            del self._counts[c.id]
        self.ctx.metrics.count_sessions.inc()
        log.info("ops: count %s finished: %s", c.id, result.totals())
        return doc

    def _count_doc(self, result: CountResult, c: _Count, newly: Iterable[Any],
                   reinstated: Iterable[str]) -> dict[str, Any]:
        doc = result.to_dict()
        doc["site"] = self.site_id
        doc["timezone"] = self.ctx.config.site.timezone  # HQ's charts: the site's calendar day
        doc["trigger"] = c.trigger
        doc["adopt"] = c.adopt
        doc["recount_of"] = c.recount_of
        if c.adopt:  # the books were made from it, not checked against it: no accuracy
            doc["accuracy"] = {k: (None if isinstance(v, float) else v)
                               for k, v in doc["accuracy"].items()}
        for key in ("missing", "misplaced", "unexpected"):
            for entry in doc[key]:
                entry.update(self.catalog.product(entry["epc"]))
        doc["shrinkage"] = {"newly_suspected": [s.to_dict() for s in newly],
                            "reinstated": list(reinstated)}
        return doc

    def _count_events(self, result: CountResult, seen: Mapping[str, str]) -> list[ItemEvent]:
        """`cycle_counting` OBSERVE events: every item seen in a counted zone, per zone, in
        chunks (a million EPCs in one EPCIS event would be one 50 MB MQTT message)."""
        by_zone: dict[str, list[str]] = {z: [] for z in result.zones}
        for e, z in seen.items():
            lst = by_zone.get(z)
            if lst is not None:
                lst.append(e)
        cfg = self.ctx.config
        n = max(1, self.settings.count_event_chunk)
        events = []
        for z, epcs in by_zone.items():
            epcs.sort()
            for i in range(0, len(epcs), n):
                events.append(ItemEvent(
                    event_id=stable_event_id(self.site_id, "cycle_counting", result.session_id,
                                             z, i // n),
                    event_time=result.finished_at, action=Action.OBSERVE,
                    epcs=tuple(epcs[i:i + n]), biz_step="cycle_counting", disposition=None,
                    read_point=cfg.zone_read_point(z), biz_location=self.site_sgln, zone=z,
                ))
        return events

    def count_csv(self, cid: str) -> str:
        with self.ctx.db.session() as s:
            doc = store.count_report(s, cid)
        if doc is None:
            raise OpsError(404, f"no finished count {cid}")
        return _count_doc_csv(doc)

    def tick(self) -> None:
        """Scheduler job: refresh live counts, stop the ones whose time is up."""
        now = time.time()
        with self._lock:
            due = [c.id for c in self._counts.values() if c.ends_at is not None
                   and c.ends_at <= now]
            for c in self._counts.values():
                self._refresh(c)
        for cid in due:
            try:
                self.stop_count(cid)
            except OpsError as exc:
                log.warning("ops: timed stop of count %s: %s", cid, exc)


def _count_doc_csv(doc: Mapping[str, Any]) -> str:
    """The exceptions of a stored count report as CSV (the columns of inventory.reports)."""
    header = ["status", "epc", "booked_zone", "seen_zone", "gtin", "sku", "name"]
    rows: list[list[Any]] = []
    for m in doc.get("missing", []):
        rows.append(["missing", m["epc"], m["booked_zone"], None, m.get("gtin"), m.get("sku"),
                     m.get("name")])
    for m in doc.get("misplaced", []):
        rows.append(["misplaced", m["epc"], m["booked_zone"], m["found_zone"], m.get("gtin"),
                     m.get("sku"), m.get("name")])
    for u in doc.get("unexpected", []):
        rows.append(["unexpected", u["epc"], u.get("booked_zone"), u["zone"], u.get("gtin"),
                     u.get("sku"), u.get("name")])
    for e in doc.get("unidentified", []):
        rows.append(["unidentified", e, None, None, None, None, None])
    return to_csv((header, rows))


__all__ = ["CountingService"]
