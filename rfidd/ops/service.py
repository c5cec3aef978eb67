"""StoreOps: reception against ASNs, cycle counts, shrinkage and replenishment in the daemon.

The business rules are in `inventory/`; this service feeds them from the presence tracker and
the database, and writes their results (reports, events, alerts) through the ServiceContext so
each result, its EPCIS events and its outbox messages commit together.

Threads: the change hook runs on the ingest thread, inside the batch's transaction; API, HQ
command and scheduler calls run on their own threads. `_lock` is the daemon's domain-state lock
(ServiceContext.tracker_lock, re-entrant): it guards the in-memory sessions, the loss tracker
and the tracker, and is always taken before a write transaction, never inside one.

Counts read the tracker, not the change stream: an item read after the count's start mark
(`touched_since`) was seen during the count, in the zone presence settled on. Settled zones
matter: a bag carried from stockroom to floor keeps its stockroom zone until the floor beats it
by the RSSI margin, so a count fed read by read would call it found where it no longer is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from inventory.asn import (
    Asn,
    AsnOutcome,
    classify_import,
    normalize_epc_hex,
    parse_asn_csv,
    parse_asn_json,
    parse_asn_object,
)
from inventory.catalog import (
    Catalog,
    ImportIssue,
    ImportResult,
    parse_catalog_csv,
    parse_catalog_json,
    parse_catalog_records,
)
from inventory.counting import CountResult, CountSession
from inventory.epc import DecodedEpc, EpcClass, EpcClassifier, decode, epc_hex_from_uri
from inventory.events import Action, ItemEvent, stable_event_id
from inventory.lifecycle import ItemState, Lifecycle, Step, Transition
from inventory.presence import ChangeKind, PresenceChange
from inventory.reception import ReceptionSession
from inventory.replenishment import ReplenishmentLine, replenishment_list
from inventory.reports import reception_csv, shrinkage_csv
from inventory.shrinkage import (
    ExitAlert,
    ExitMonitor,
    LossTracker,
    ShrinkageReport,
    shrinkage_report,
)
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.ops import store
from rfidd.store import repo

log = logging.getLogger("rfidd.ops")

REPORT_STREAM = "report"
ALERT_STREAM = "alert"
LOSS_STATE_KEY = "loss_tracker"
_MISSING = object()


class OpsError(Exception):
    """A request staff or HQ can fix; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class OpsSettings:
    """Behaviour knobs; tests set the time constants small."""

    auto_open_reception: bool = True  # an ASN for this site opens (or joins) a reception
    exit_debounce_s: float | None = None  # None: config.shrinkage.exit_alert_debounce_s
    count_event_chunk: int = 1000  # EPCs per cycle_counting event
    default_count_duration_s: float = 600.0  # scheduled counts
    tick_s: float = 2.0  # live count progress refresh and timed stops
    loss_min_confidence: float = 0.95


@dataclass
class _Reception:
    id: str
    asns: list[Asn]
    opened_by: str
    session: ReceptionSession
    reads: dict[str, tuple[float, str]] = field(default_factory=dict)  # epc -> (first, zone)
    last_new_read: float = field(default_factory=time.time)  # opened, or the latest new item


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


def _new_id(prefix: str, at: float) -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


def issues_text(issues: Sequence[ImportIssue], limit: int = 20) -> str:
    shown = "; ".join(str(i) for i in issues[:limit])
    more = len(issues) - limit
    return shown + (f"; ... and {more} more" if more > 0 else "")


class StoreOps:
    """The store-operations service (see the module docstring)."""

    def __init__(self, ctx: ServiceContext, settings: OpsSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = settings or OpsSettings()
        cfg = ctx.config
        self.site_id = cfg.site.id
        self.site_sgln = cfg.site.sgln
        self.zones_of_kind: dict[ZoneKind, frozenset[str]] = {
            k: frozenset(z for z, zc in cfg.zones.items() if zc.kind is k) for k in ZoneKind
        }
        self.reception_zones = self.zones_of_kind[ZoneKind.RECEPTION]
        self.exit_zones = self.zones_of_kind[ZoneKind.EXIT]
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self._exit_lock = threading.Lock()
        self.may_leave: Callable[[str], bool] | None = None
        self.catalog = Catalog()
        self.loss = LossTracker(cfg.shrinkage.counts_before_suspected,
                                min_confidence=self.settings.loss_min_confidence)
        debounce = self.settings.exit_debounce_s
        self.exit_monitor = ExitMonitor(
            self.exit_zones, is_sold=self._is_sold,
            debounce_s=cfg.shrinkage.exit_alert_debounce_s if debounce is None else debounce)
        self.lifecycle = Lifecycle()
        self._reception: _Reception | None = None
        self._counts: dict[str, _Count] = {}
        self._scheduler: Any = None
        self.hook_errors = 0
        ctx.change_hooks.append(self._on_changes)
        # Exit gates: a tag passes too fast, or too close to the floor antennas, to settle in
        # the exit zone; every read there counts (the monitor debounces per item).
        ctx.watch_reads(self.exit_zones, self._on_exit)
        ctx.register_command("asn", self.command_asn)
        ctx.register_command("catalog", self.command_catalog)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Load the catalog and loss state; resume open receptions; abort orphaned counts."""
        with self.ctx.db.session() as s:
            self.catalog = store.load_catalog(s)
            state = store.load_state(s, LOSS_STATE_KEY)
            open_rows = store.open_receptions(s)
        self.ctx.catalog_changed(frozenset(self.catalog))
        if state is not None:
            try:
                self.loss.load_state(state)
            except ValueError as exc:
                log.error("ops: %s; starting the loss tracker afresh", exc)
        with self.ctx.transaction() as s:
            aborted = store.abort_running_counts(s, time.time())
        if aborted:
            log.warning("ops: counts %s were running when the daemon stopped; marked aborted",
                        ", ".join(aborted))
        for row in open_rows[-1:]:  # one reception at a time; the newest wins
            try:
                self._resume_reception(row.id, json.loads(row.asn_ids), row.opened_by,
                                       row.opened_at)
            except (OpsError, ValueError) as exc:
                log.error("ops: cannot resume reception %s: %s", row.id, exc)
        log.info("ops: %d products in the catalog, %d suspected losses", len(self.catalog),
                 len(self.loss.suspected()))

    def stop(self) -> None:
        """Persist the loss tracker; sessions stay open in the database for the next start."""
        try:
            with self._lock, self.ctx.transaction() as s:
                store.save_state(s, LOSS_STATE_KEY, self.loss.to_state())
        except Exception:
            log.exception("ops: saving the loss tracker state failed")

    # -- lookups -----------------------------------------------------------------------------
    @staticmethod
    def gtin_of(epc: str) -> str | None:
        return decode(epc).gtin14

    def record_of(self, epc: str) -> str | None:
        """SKU (or GTIN) of a stock item; None keeps it out of stock figures (not GS1, or a
        GTIN the catalog does not list, once there is a catalog)."""
        return self._record(decode(epc).gtin14)

    def _record(self, gtin: str | None) -> str | None:
        if gtin is None:
            return None
        p = self.catalog.get(gtin)
        if p is not None:
            return p.sku or gtin
        return None if len(self.catalog) else gtin

    def _is_sold(self, epc: str) -> bool:
        """May this item leave without an alert? The daemon plugs in the lifecycle's answer
        (`may_leave`: sold, lent, shipped, a customer's repair); alone, ops knows sales only."""
        if self.may_leave is not None:
            return self.may_leave(epc)
        with self.ctx.db.session() as s:
            return store.dispositions(s, [epc]).get(epc) == store.SOLD

    def _product(self, epc: str) -> dict[str, Any]:
        g = self.gtin_of(epc)
        p = self.catalog.get(g) if g else None
        return {"gtin": g, "sku": p.sku if p else None, "name": p.name if p else None}

    # -- ingest hook -------------------------------------------------------------------------
    def _on_changes(self, s: Session, changes: list[PresenceChange],
                    decoded: dict[str, DecodedEpc]) -> None:
        """Feed receptions, the loss tracker and the exit monitor; exit alerts are staged in
        the ingest batch's transaction. An error is counted in hook_errors and re-raised: the
        ingest rolls back this hook's savepoint and keeps the rest of the batch."""
        try:
            recv: list[tuple[str, float, str]] = []
            exits: list[tuple[str, str, float]] = []
            present: list[str] = []
            for c in changes:
                if c.kind is ChangeKind.DEPARTED or c.zone is None:
                    continue
                present.append(c.epc)
                if c.zone in self.reception_zones:
                    recv.append((c.epc, c.at, c.zone))
                elif c.zone in self.exit_zones:
                    exits.append((c.epc, c.zone, c.at))
            with self._lock:
                for e in present:
                    if self.loss.seen(e):
                        log.info("ops: %s suspected lost, seen again: reinstated", e)
                if recv and self._reception is not None:
                    self._feed_reception(self._reception, recv)
            if exits:
                self._on_exit(s, exits)
        except Exception:
            self.hook_errors += 1
            log.exception("ops: change hook failed (batch of %d changes skipped by ops)",
                          len(changes))
            raise  # the ingest rolls back this hook's savepoint

    # -- catalog -----------------------------------------------------------------------------
    def import_catalog(self, result: ImportResult) -> dict[str, Any]:
        """Upsert the valid products; the answer lists every rejected row with its field."""
        now = time.time()
        if result.products:
            with self.ctx.transaction() as s:
                repo.upsert_products(s, [p.to_dict() for p in result.products], now)
            with self.ctx.db.session() as s:
                catalog = store.load_catalog(s)
            with self._lock:
                self.catalog = catalog
            self.ctx.catalog_changed(frozenset(catalog))
        return {"imported": len(result.products), "catalog_size": len(self.catalog),
                "errors": [i.to_dict() for i in result.errors],
                "error_text": [str(i) for i in result.errors]}

    def import_catalog_text(self, text: str, fmt: str, source: str) -> dict[str, Any]:
        if fmt == "csv":
            return self.import_catalog(parse_catalog_csv(text, source))
        if fmt == "json":
            return self.import_catalog(parse_catalog_json(text, source))
        raise OpsError(400, f"format: {fmt!r} is not csv or json")

    def command_catalog(self, payload: Any) -> str:
        """HQ `catalog`: a list of products, or {"products": [...]}."""
        records = payload.get("products") if isinstance(payload, dict) else payload
        if not isinstance(records, list):
            raise ValueError("catalog: payload must be a list of products or "
                             "{\"products\": [...]} (field 'products')")
        res = self.import_catalog(parse_catalog_records(records, "cmd/catalog"))
        if res["errors"]:
            raise ValueError(f"catalog: imported {res['imported']} product(s), rejected: "
                             + issues_text([ImportIssue(**e) for e in res["errors"]]))
        return f"imported {res['imported']} product(s)"

    def classification(self) -> dict[str, Any]:
        """How the items this site has seen sort out against the company prefixes and catalog:
        unknown products are counted here and kept out of counts and replenishment."""
        classifier = EpcClassifier(set(self.ctx.config.site.company_prefixes),
                                   set(self.catalog) if len(self.catalog) else None)
        with self.ctx.db.session() as s:
            from sqlalchemy import select

            from rfidd.store.models import Item

            rows = list(s.execute(select(Item.epc, Item.gtin)))
        by_class: Counter[str] = Counter()
        unknown_gtins: Counter[str] = Counter()
        for epc, gtin in rows:
            cls = classifier.classify(decode(epc)) if gtin is None else (
                EpcClass.UNKNOWN_PRODUCT if classifier.catalog_gtins is not None
                and gtin not in classifier.catalog_gtins else EpcClass.OURS)
            by_class[str(cls)] += 1
            if cls is EpcClass.UNKNOWN_PRODUCT and gtin:
                unknown_gtins[gtin] += 1
        rejected: dict[str, float] = {}
        for kind in EpcClass:
            v = self.ctx.metrics.registry.get_sample_value(
                "rfidd_rejected_epcs_total", {"kind": str(kind)})
            if v:
                rejected[str(kind)] = v
        return {"items": dict(sorted(by_class.items())), "catalog_size": len(self.catalog),
                "unknown_gtins": dict(unknown_gtins.most_common(50)),
                "rejected_reads": rejected}

    # -- ASNs --------------------------------------------------------------------------------
    def import_asns(self, asns: Sequence[Asn], source: str,
                    open_reception: bool | None = None) -> dict[str, Any]:
        """Store new ASNs; identical re-imports change nothing; a different ASN reusing an id
        is a conflict. New ASNs addressed to this site open (or join) a reception."""
        now = time.time()
        out: dict[str, Any] = {"new": [], "identical": [], "conflicts": [], "warnings": []}
        for asn in asns:
            with self.ctx.transaction() as s:
                outcome = classify_import(store.asn_hash(s, asn.asn_id), asn)
                if outcome is AsnOutcome.NEW:
                    store.insert_asn(s, asn, source, now)
            if outcome is AsnOutcome.NEW:
                out["new"].append(asn.asn_id)
            elif outcome is AsnOutcome.IDENTICAL:
                out["identical"].append(asn.asn_id)
            else:
                out["conflicts"].append(
                    f"ASN {asn.asn_id}: already imported with other content; the stored one "
                    "is kept (give the new one another asn_id, or fix it at the source)")
        auto = self.settings.auto_open_reception if open_reception is None else open_reception
        for asn_id in out["new"]:
            asn = next(a for a in asns if a.asn_id == asn_id)
            if asn.destination != self.site_id:
                out["warnings"].append(f"ASN {asn_id} is addressed to {asn.destination!r}, not "
                                       f"this site {self.site_id!r}: no reception opened")
                continue
            if auto:
                rec = self.open_reception([asn_id], opened_by="asn", join=True)
                out.setdefault("reception", rec["session_id"])
        return out

    def import_asn_text(self, text: str, fmt: str, source: str,
                        open_reception: bool | None = None) -> dict[str, Any]:
        if fmt == "csv":
            res = parse_asn_csv(text, source, self._asn_epc())
        elif fmt == "json":
            res = parse_asn_json(text, source, self._asn_epc())
        else:
            raise OpsError(400, f"format: {fmt!r} is not csv or json")
        out = self.import_asns(res.asns, source, open_reception)
        out["errors"] = [str(i) for i in res.errors]
        return out

    def _asn_epc(self) -> Callable[[str], str]:
        """ASN EPCs as hex tags: hex as is; SGTIN URIs through the tags this site has read
        (their real filter value), else encoded as SGTIN-96 (filter 1, a point-of-sale item)."""
        known: dict[str, str] | None = None

        def normalize(value: str) -> str:
            nonlocal known
            if not value.strip().lower().startswith("urn:"):
                return normalize_epc_hex(value)
            if known is None:
                with self.ctx.db.session() as s:
                    known = store.hex_by_uri(s)
            return known.get(value.strip()) or epc_hex_from_uri(value)

        return normalize

    def command_asn(self, payload: Any) -> str:
        """HQ `asn`: one ASN object or a list of them (the JSON format of inventory.asn)."""
        objs = payload if isinstance(payload, list) else [payload]
        asns: list[Asn] = []
        issues: list[ImportIssue] = []
        normalize = self._asn_epc()
        for i, obj in enumerate(objs):
            res = parse_asn_object(obj, f"cmd/asn[{i}]" if len(objs) > 1 else "cmd/asn",
                                   normalize)
            asns.extend(res.asns)
            issues.extend(res.errors)
        if issues:  # all or nothing: a half-imported ASN makes false "unexpected" items
            raise ValueError("asn rejected: " + issues_text(issues))
        out = self.import_asns(asns, "mqtt cmd/asn")
        if out["conflicts"]:
            raise ValueError("; ".join(out["conflicts"]))
        return (f"new {out['new']}, identical {out['identical']}"
                + (f", reception {out['reception']}" if "reception" in out else ""))

    # -- reception ---------------------------------------------------------------------------
    def open_reception(self, asn_ids: Sequence[str], opened_by: str = "staff",
                       join: bool = False) -> dict[str, Any]:
        """Open a reception against ASNs; `join` adds them to the open one instead of failing."""
        ids = list(dict.fromkeys(asn_ids))
        if not ids:
            raise OpsError(400, "asn_ids: give at least one ASN id")
        with self.ctx.db.session() as s:
            found = store.load_asns(s, ids)
        unknown = [a for a in ids if a not in found]
        if unknown:
            raise OpsError(404, f"asn_ids: unknown ASN(s) {', '.join(unknown)} (import first)")
        used = [f"{a} (session {sid})" for a, (_, sid) in found.items() if sid is not None]
        with self._lock:
            cur = self._reception
            if cur is not None:
                used = [u for u in used if not u.endswith(f"(session {cur.id})")]
            if used:
                raise OpsError(409, f"asn_ids: already received: {', '.join(used)}")
            now = time.time()
            if cur is not None:
                if not join:
                    raise OpsError(409, f"reception {cur.id} is open; close it first")
                new_ids = [a for a in ids if a not in {x.asn_id for x in cur.asns}]
                asns = cur.asns + [found[a][0] for a in new_ids]
                rec = self._build_reception(cur.id, asns, cur.opened_by,
                                            cur.session.opened_at, cur.reads)
                with self.ctx.transaction() as s:
                    store.update_reception_asns(s, cur.id, [a.asn_id for a in asns])
                    store.set_asn_session(s, new_ids, cur.id)
            else:
                sid = _new_id("rcv", now)
                rec = self._build_reception(sid, [found[a][0] for a in ids], opened_by, now, {})
                with self.ctx.transaction() as s:
                    store.insert_reception(s, sid, ids, opened_by, now)
                    store.set_asn_session(s, ids, sid)
            self._reception = rec
            self._feed_present(rec)
            log.info("ops: reception %s open against %s", rec.id,
                     ", ".join(a.asn_id for a in rec.asns))
            return self._reception_status(rec)

    def _resume_reception(self, sid: str, asn_ids: list[str], opened_by: str,
                          opened_at: float) -> None:
        with self.ctx.db.session() as s:
            found = store.load_asns(s, asn_ids)
        asns = [found[a][0] for a in asn_ids if a in found]
        if not asns:
            raise OpsError(404, f"reception {sid}: its ASNs are gone")
        with self._lock:
            rec = self._build_reception(sid, asns, opened_by, opened_at, {})
            self._reception = rec
            self._feed_present(rec)
        log.info("ops: reception %s resumed (%d items already at reception)", sid,
                 len(rec.reads))

    def _build_reception(self, sid: str, asns: list[Asn], opened_by: str, opened_at: float,
                         reads: Mapping[str, tuple[float, str]]) -> _Reception:
        session = ReceptionSession(asns, gtin_of=self.gtin_of, catalog=self.catalog,
                                   session_id=sid, site=self.site_id, opened_at=opened_at)
        rec = _Reception(sid, asns, opened_by, session)
        self._feed_reception(rec, [(e, t, z) for e, (t, z) in reads.items()])
        return rec

    def _feed_present(self, rec: _Reception) -> None:
        """Items already standing in a reception zone when the session opens count as read."""
        if not self.reception_zones:
            return
        with self.ctx.tracker_lock:
            rows = [r for r in self.ctx.tracker.snapshot() if r.zone in self.reception_zones]
        self._feed_reception(rec, [(r.epc, r.since, r.zone) for r in rows])

    @staticmethod
    def _feed_reception(rec: _Reception, reads: Iterable[tuple[str, float, str]]) -> None:
        for epc, at, zone in reads:
            if epc in rec.reads:
                continue
            rec.reads[epc] = (at, zone)
            rec.session.observe((epc,), at=at)
            rec.last_new_read = time.time()

    def _reception_status(self, rec: _Reception) -> dict[str, Any]:
        return {"session_id": rec.id, "status": "open", "opened_by": rec.opened_by,
                "opened_at": rec.session.opened_at, "asn_ids": [a.asn_id for a in rec.asns],
                "progress": rec.session.progress()}

    def reception(self, sid: str) -> dict[str, Any]:
        """An open session's interim report, or a closed one's stored report."""
        with self._lock:
            rec = self._reception
            if rec is not None and rec.id == sid:
                return {**self._reception_status(rec),
                        "report": rec.session.report().to_dict()}
        with self.ctx.db.session() as s:
            doc = store.reception_report(s, sid)
        if doc is None:
            raise OpsError(404, f"unknown reception session {sid}")
        return {"session_id": sid, "status": "closed", "report": doc}

    def receptions(self) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            rows = store.reception_rows(s)
        with self._lock:
            rec = self._reception
            live = self._reception_status(rec) if rec is not None else None
        for r in rows:
            if live is not None and r["session_id"] == live["session_id"]:
                r["progress"] = live["progress"]
        return rows

    def close_reception(self, sid: str | None = None) -> dict[str, Any]:
        """Close the reception: report, `receiving` events and the HQ message in one commit."""
        with self._lock:
            rec = self._reception
            if rec is None or (sid is not None and rec.id != sid):
                raise OpsError(404 if sid else 409, f"no open reception session {sid or ''}"
                               .strip())
            now = time.time()
            report = rec.session.close(at=now)
            events, upserts = self._receiving_events(rec)
            doc = report.to_dict()
            message = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "reception"), doc,
                                   event_id=stable_event_id(self.site_id, "reception_report",
                                                            rec.id))
            try:
                with self.ctx.transaction() as s:
                    self.ctx.stage(s, events, [message], upserts)
                    store.close_reception(s, rec.id, now, doc)
            except Exception:
                rec.session.closed_at = None  # still open: reads keep feeding it, retry later
                raise
            self._reception = None
        log.info("ops: reception %s closed: %s", rec.id, report.totals())
        return doc

    def _receiving_events(self, rec: _Reception) -> tuple[list[ItemEvent], list[repo.ItemUpsert]]:
        """One `receiving` event per received item, from the lifecycle rules (desadv = ASN)."""
        events: list[ItemEvent] = []
        upserts: list[repo.ItemUpsert] = []
        by_id = {a.asn_id: a for a in rec.asns}
        cfg = self.ctx.config
        for asn_id, epcs in rec.session.received_by_asn().items():
            asn = by_id[asn_id]
            for epc in epcs:
                at, zone = rec.reads.get(epc, (time.time(), None))
                state = ItemState.shipped_to(epc, self.site_id, asn.shipped_at.timestamp(),
                                             shipment=asn_id)
                out = self.lifecycle.apply(state, Transition(
                    Step.RECEIVE, epc, at, self.site_id, self.site_sgln,
                    read_point=cfg.zone_read_point(zone) if zone else None, zone=zone,
                    txn=asn_id))
                if not out.accepted:  # cannot happen for a fresh in-transit state; log it
                    log.warning("ops: receiving %s rejected: %s", epc, out.reason)
                    continue
                events.extend(out.events)
                upserts.append(repo.ItemUpsert(epc, biz_step="receiving",
                                               disposition=out.events[0].disposition))
        return events, upserts

    def reception_csv(self, sid: str) -> str:
        """The per-GTIN table of a reception as CSV (from the live session when open)."""
        with self._lock:
            rec = self._reception
            if rec is not None and rec.id == sid:
                return reception_csv(rec.session.report())
        doc = self.reception(sid)["report"]
        return _lines_csv(doc)

    # -- counts ------------------------------------------------------------------------------
    def start_count(self, zones: Sequence[str], trigger: str = "staff",
                    duration_s: float | None = None) -> dict[str, Any]:
        """Start a count over `zones`; the book is the items table as it is now."""
        zs = tuple(sorted(set(zones)))
        if not zs:
            raise OpsError(400, "zones: give at least one zone to count")
        unknown = [z for z in zs if z not in self.ctx.config.zones]
        if unknown:
            raise OpsError(400, f"zones: unknown zone(s) {', '.join(unknown)} (known: "
                           f"{', '.join(sorted(self.ctx.config.zones))})")
        if duration_s is not None and duration_s <= 0:
            raise OpsError(400, "duration_s: must be > 0")
        with self._lock:
            busy = [c.id for c in self._counts.values() if set(c.zones) & set(zs)]
            if busy:
                raise OpsError(409, f"zones: count {busy[0]} is already running over "
                               "some of these zones")
            now = time.time()
            cid = _new_id("cnt", now)
            with self.ctx.tracker_lock:
                mark = self.ctx.tracker.mark
            with self.ctx.db.session() as s:
                book, gtins = store.load_book(s)
            records = {e: self._record(g) for e, g in gtins.items()}
            book = {e: z for e, z in book.items() if records[e] is not None}

            def record_of(epc: str, _r: dict[str, str | None] = records) -> str | None:
                r = _r.get(epc, _MISSING)
                return self.record_of(epc) if r is _MISSING else r  # type: ignore[return-value]

            live = CountSession(zs, book, record_of=record_of, session_id=cid, started_at=now)
            count = _Count(cid, zs, trigger, now, mark, mark, book, record_of, live,
                           ends_at=None if duration_s is None else now + duration_s)
            with self.ctx.transaction() as s:
                store.insert_count(s, cid, zs, trigger, now, live.expected_count)
            self._counts[cid] = count
        log.info("ops: count %s started over %s (%d expected, %s)", cid, ", ".join(zs),
                 live.expected_count, trigger)
        return self._count_progress(count)

    def _refresh(self, count: _Count) -> None:
        with self.ctx.tracker_lock:
            rows = self.ctx.tracker.touched_since(count.last_mark)
            count.last_mark = self.ctx.tracker.mark
        pairs = [(r.epc, r.zone) for r in rows]
        count.sightings.update(pairs)
        count.live.observe_many(pairs)

    def _count_progress(self, count: _Count) -> dict[str, Any]:
        return {"session_id": count.id, "status": "running", "zones": list(count.zones),
                "trigger": count.trigger, "started_at": count.started_at,
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
            g = self.gtin_of(epc)
            p = self.catalog.get(g) if g else None
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

    def running_counts(self) -> list[str]:
        with self._lock:
            return list(self._counts)

    def stop_count(self, cid: str | None = None) -> dict[str, Any]:
        """Finish a count: reconcile, cycle_counting events, report to HQ, loss tracker."""
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
            now = time.time()
            with self.ctx.tracker_lock:
                rows = self.ctx.tracker.touched_since(c.start_mark)
                gone = {e: z for e, z in c.sightings.items() if e not in self.ctx.tracker}
            seen = {r.epc: r.zone for r in rows}
            for e, z in gone.items():  # read during the count, departed since
                seen.setdefault(e, z)
            final = CountSession(c.zones, c.book, record_of=c.record_of, session_id=c.id,
                                 started_at=c.started_at)
            final.observe_many(seen.items())
            result = final.finish(at=now)
            loss_before = self.loss.to_state()  # restored if the commit fails: no double count
            update = self.loss.record_count(result, at=now)
            doc = self._count_doc(result, c, update.newly_suspected, update.reinstated)
            events = self._count_events(result, seen)
            message = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "count"), doc,
                                   event_id=stable_event_id(self.site_id, "count_report", c.id))
            try:
                with self.ctx.transaction() as s:
                    self.ctx.stage(s, events, [message])
                    store.finish_count(s, c.id, now, doc, result.accuracy.record)
                    store.save_state(s, LOSS_STATE_KEY, self.loss.to_state(), now)
            except Exception:
                self.loss.load_state(loss_before)
                raise
            del self._counts[cid]
        self.ctx.metrics.count_sessions.inc()
        log.info("ops: count %s finished: %s", cid, result.totals())
        return doc

    def _count_doc(self, result: CountResult, c: _Count, newly: Iterable[Any],
                   reinstated: Iterable[str]) -> dict[str, Any]:
        doc = result.to_dict()
        doc["site"] = self.site_id
        doc["trigger"] = c.trigger
        for key in ("missing", "misplaced", "unexpected"):
            for entry in doc[key]:
                entry.update(self._product(entry["epc"]))
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
        self._close_reception_by_rule(now)

    def _close_reception_by_rule(self, now: float) -> None:
        """The reception rules of the config: complete and quiet, or idle for long."""
        rules = self.ctx.config.reception
        with self._lock:
            rec = self._reception
            if rec is None:
                return
            p = rec.session.progress()
            quiet = now - rec.last_new_read
            complete = p["expected"] > 0 and p["received_listed"] >= p["expected"]
            why = None
            if complete and rules.auto_close_complete_s is not None \
                    and quiet >= rules.auto_close_complete_s:
                why = f"every expected item received, quiet for {quiet:.0f} s"
            elif rules.auto_close_idle_s is not None and quiet >= rules.auto_close_idle_s:
                why = f"no new item for {quiet:.0f} s"
        if why is not None:
            log.info("ops: closing reception %s by rule: %s", rec.id, why)
            try:
                self.close_reception(rec.id)
            except OpsError as exc:  # closed by staff meanwhile
                log.info("ops: reception %s: %s", rec.id, exc)

    # -- schedules ---------------------------------------------------------------------------
    def attach_scheduler(self, scheduler: Any) -> None:
        """Add the tick job and every stored count schedule to the daemon's scheduler."""
        self._scheduler = scheduler
        scheduler.add_job(self.tick, "interval", seconds=self.settings.tick_s, id="ops-tick",
                          replace_existing=True)
        with self.ctx.db.session() as s:
            rows = store.schedules(s)
        for r in rows:
            try:
                self._schedule_job(r["id"], r["cron"], r["zones"], r["duration_s"])
            except ValueError as exc:
                log.error("ops: count schedule %s (%r) ignored: %s", r["id"], r["cron"], exc)

    def _schedule_job(self, sid: int, cron: str, zones: list[str], duration_s: float) -> None:
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(cron, timezone=self.ctx.config.site.timezone)
        if self._scheduler is not None:
            self._scheduler.add_job(self.scheduled_count, trigger, args=[zones, duration_s],
                                    id=f"ops-count-{sid}", replace_existing=True)

    def scheduled_count(self, zones: list[str], duration_s: float) -> None:
        try:
            self.start_count(zones, trigger="schedule", duration_s=duration_s)
        except OpsError as exc:
            log.warning("ops: scheduled count over %s not started: %s", zones, exc)

    def add_schedule(self, cron: str, zones: Sequence[str],
                     duration_s: float | None = None) -> dict[str, Any]:
        from apscheduler.triggers.cron import CronTrigger

        unknown = [z for z in zones if z not in self.ctx.config.zones]
        if not zones or unknown:
            raise OpsError(400, f"zones: unknown or none: {unknown or zones}")
        try:
            CronTrigger.from_crontab(cron, timezone=self.ctx.config.site.timezone)
        except ValueError as exc:
            raise OpsError(400, f"cron: {cron!r} is not a crontab expression "
                           f"(minute hour day month weekday): {exc}") from None
        d = self.settings.default_count_duration_s if duration_s is None else duration_s
        if d <= 0:
            raise OpsError(400, "duration_s: must be > 0")
        with self.ctx.transaction() as s:
            sid = store.add_schedule(s, cron, list(zones), d, time.time())
        self._schedule_job(sid, cron, list(zones), d)
        return {"id": sid, "cron": cron, "zones": list(zones), "duration_s": d,
                "active": self._scheduler is not None}

    def schedules(self) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            return store.schedules(s)

    def delete_schedule(self, sid: int) -> None:
        with self.ctx.transaction() as s:
            if not store.delete_schedule(s, sid):
                raise OpsError(404, f"unknown count schedule {sid}")
        if self._scheduler is not None:
            with contextlib.suppress(Exception):  # JobLookupError: never got scheduled
                self._scheduler.remove_job(f"ops-count-{sid}")

    # -- exits -------------------------------------------------------------------------------
    def _on_exit(self, s: Session, reads: list[tuple[str, str, float]]) -> None:
        """Unsold items in an exit zone: alert + entering_exiting event, staged in the
        transaction of the reads that saw them."""
        with self._exit_lock:
            alerts: list[ExitAlert] = self.exit_monitor.observe_many(reads)
            if not alerts:
                return
            cfg = self.ctx.config
            events = [a.to_event(cfg.zone_read_point(a.zone)) for a in alerts]
            messages = [repo.Message(ALERT_STREAM, self.ctx.topic("alerts"),
                                     {**a.to_dict(), "site": self.site_id,
                                      **self._product(a.epc)},
                                     event_id=a.alert_id) for a in alerts]
            upserts = [repo.ItemUpsert(a.epc, biz_step="entering_exiting",
                                       disposition=events[i].disposition)
                       for i, a in enumerate(alerts)]
            self.ctx.stage(s, events, messages, upserts)
            for a in alerts:
                store.insert_exit_alert(s, a.alert_id, a.epc, a.zone, a.at)
        for a in alerts:
            self.ctx.metrics.alerts.labels("exit_unsold").inc()
            log.warning("ops: ALERT unsold item %s at exit %s", a.epc, a.zone)

    # -- shrinkage and replenishment ---------------------------------------------------------
    def _currency(self) -> str:
        cur = Counter(p.currency for p in self.catalog.values() if p.currency)
        return cur.most_common(1)[0][0] if cur else "EUR"

    def shrinkage(self, start: float, end: float, currency: str | None = None,
                  publish: bool = False) -> ShrinkageReport:
        if end <= start:
            raise OpsError(400, "until: must be after since")
        cur = currency or self._currency()
        with self._lock:
            suspected = list(self.loss.suspected())
            catalog = self.catalog
        with self.ctx.db.session() as s:
            alerts = store.exit_alerts(s, start, end)
            epcs = sorted({a[1] for a in alerts} | {x.epc for x in suspected})
            disp = store.dispositions(s, epcs)
            zones = store.item_zones(s, epcs)
            sales, _ = store.sales_value(s, start, end, catalog, cur)
        # Sold since it was suspected: not a loss after all.
        suspected = [x for x in suspected if disp.get(x.epc) != store.SOLD]

        def home(epc: str) -> str | None:
            z = zones.get(epc)
            return None if z in self.exit_zones else z

        report = shrinkage_report(
            start, end, suspected=suspected,
            exit_alerts=[ExitAlert(a, e, z, t) for a, e, z, t in alerts],
            sales_value=sales, currency=cur, catalog=catalog, gtin_of=self.gtin_of,
            home_zone_of=home)
        if publish:
            doc = {**report.to_dict(), "site": self.site_id}
            msg = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "shrinkage"), doc,
                               event_id=stable_event_id(self.site_id, "shrinkage_report",
                                                        start, end, len(report.items),
                                                        str(report.lost_value)))
            self.ctx.emit(messages=[msg])
        return report

    def shrinkage_csv(self, start: float, end: float, currency: str | None = None) -> str:
        return shrinkage_csv(self.shrinkage(start, end, currency))

    def suspected(self) -> dict[str, Any]:
        with self._lock:
            return {"suspected": [x.to_dict() for x in self.loss.suspected()],
                    "read_rates": {z: r.to_dict() for z, r in self.loss.read_rates().items()}}

    def replenishment(self, floor_min: int = 1) -> tuple[ReplenishmentLine, ...]:
        if floor_min < 1:
            raise OpsError(400, "floor_min: must be >= 1")
        with self.ctx.tracker_lock:
            locations = [(r.epc, r.zone) for r in self.ctx.tracker.snapshot()]
        stock = self.zones_of_kind[ZoneKind.STOCK]
        floor = self.zones_of_kind[ZoneKind.FLOOR] | self.zones_of_kind[ZoneKind.FITTING]
        with self._lock:
            catalog = self.catalog

        def gtin_of(epc: str) -> str | None:
            g = self.gtin_of(epc)
            return g if g is not None and (not len(catalog) or g in catalog) else None

        return replenishment_list(locations, gtin_of=gtin_of, catalog=catalog,
                                  stock_zones=stock, floor_zones=floor, floor_min=floor_min)


def _lines_csv(doc: Mapping[str, Any]) -> str:
    from inventory.reports import to_csv

    header = ["gtin", "sku", "name", "expected", "received", "over", "short", "missing",
              "unexpected"]
    rows: list[list[Any]] = [[ln.get(h) for h in header] for ln in doc.get("lines", [])]
    return to_csv((header, rows))


def _count_doc_csv(doc: Mapping[str, Any]) -> str:
    """The exceptions of a stored count report as CSV (the columns of inventory.reports)."""
    from inventory.reports import to_csv

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


__all__ = ["OpsError", "OpsSettings", "StoreOps"]
