"""ReceptionService: ASNs (files, the API and HQ's `asn` command) and the reception session
that receives a shipment against them (one open at a time, fed by reception-zone reads,
closed by staff or by the rules of the config, reported to HQ with its `receiving` events).

An ingest component (rfidd.pipeline): `plan` runs on the ingest thread and the session is fed
only once the batch committed; API, HQ command and scheduler calls run on their own threads.
The open session is guarded by the domain-state lock (ctx.tracker_lock), always taken before a
write transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inventory.asn import (
    Asn,
    AsnOutcome,
    classify_import,
    normalize_epc_hex,
    parse_asn_csv,
    parse_asn_json,
    parse_asn_object,
)
from inventory.authenticity import Verdict
from inventory.catalog import ImportIssue
from inventory.epc import epc_hex_from_uri
from inventory.events import ItemEvent, stable_event_id
from inventory.lifecycle import ItemState, Lifecycle, Step, Transition
from inventory.presence import ChangeKind
from inventory.reception import ReceptionReport, ReceptionSession
from inventory.reports import reception_csv
from rfidd.config import ZoneKind
from rfidd.context import ServiceContext
from rfidd.lifecycle.alerts import AlertWorkflow
from rfidd.lifecycle.authenticity import TagAuthenticity
from rfidd.lifecycle.messages import cloned_tag
from rfidd.ops import store
from rfidd.ops.catalog import CatalogService
from rfidd.ops.common import (
    REPORT_STREAM,
    OpsError,
    OpsSettings,
    issues_text,
    new_id,
    zones_of_kind,
)
from rfidd.ops.receiving import CloneAlert, ReceptionClose, lines_csv
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo

log = logging.getLogger("rfidd.ops")


@dataclass
class _Reception:
    id: str
    asns: list[Asn]
    opened_by: str
    session: ReceptionSession
    reads: dict[str, tuple[float, str]] = field(default_factory=dict)  # epc -> (first, zone)
    tids: dict[str, tuple[str, ...]] = field(default_factory=dict)  # epc -> TIDs read with it
    last_new_read: float = field(default_factory=time.time)  # opened, or the latest new item
    closing: bool = False  # a thread is closing it
    close: ReceptionClose | None = None  # the close under way (kept if it failed: resumed)


class ReceptionService:
    """ASN import and reception sessions; registers the HQ command `asn`."""

    def __init__(self, ctx: ServiceContext, catalog: CatalogService,
                 settings: OpsSettings | None = None,
                 authenticity: TagAuthenticity | None = None) -> None:
        """`authenticity`: checks the chips received against the ASNs' commissioning TIDs
        (the lifecycle service's; None: no check, the report says so)."""
        self.ctx = ctx
        self.authenticity = authenticity
        self.catalog = catalog
        self.settings = settings or OpsSettings()
        self.site_id = ctx.config.site.id
        self.site_sgln = ctx.config.site.sgln
        self.reception_zones = zones_of_kind(ctx.config, ZoneKind.RECEPTION)
        self._lock = ctx.tracker_lock  # the domain-state lock: taken before any transaction
        self.lifecycle = Lifecycle()
        self._reception: _Reception | None = None
        self.on_active: Callable[[], None] = lambda: None
        """Called once a reception is open (the ops tick resumes: it applies the rules)."""
        self.watched_zones: frozenset[str] = frozenset()
        ctx.register_command("asn", self.command_asn)

    def start(self) -> None:
        """Resume the reception that was open when the daemon stopped (after the catalog)."""
        with self.ctx.transaction() as s:
            for rid, progress in store.partial_receptions(s, time.time()).items():
                log.error("ops: reception %s was being closed when the daemon stopped: %s; "
                          "marked partial (its report was not sent)", rid, progress)
            open_rows = store.open_receptions(s)
        for row in open_rows[-1:]:  # one reception at a time; the newest wins
            try:
                self._resume_reception(row.id, json.loads(row.asn_ids), row.opened_by,
                                       row.opened_at)
            except (OpsError, ValueError) as exc:
                log.error("ops: cannot resume reception %s: %s", row.id, exc)

    def stop(self) -> None:
        """Nothing to save: the open session stays open in the database for the next start."""

    # -- ingest component ------------------------------------------------------------------
    name = "reception"

    def plan(self, view: BatchView) -> BatchPlan | None:
        """Items that arrived in a reception zone feed the open reception, once committed."""
        recv = [(c.epc, c.at, c.zone) for c in view.changes
                if c.kind is not ChangeKind.DEPARTED and c.zone in self.reception_zones]
        if not recv:
            return None
        with self._lock:
            rec = self._reception
        if rec is None:
            return None

        def apply() -> None:
            with self._lock:
                if self._reception is rec and rec.close is None:  # not closed meanwhile
                    self._feed_reception(rec, recv)

        return BatchPlan(apply=apply)

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

    def asn(self, asn_id: str) -> dict[str, Any]:
        """A stored ASN's summary."""
        with self.ctx.db.session() as s:
            row = store.asn_summary(s, asn_id)
        if row is None:
            raise OpsError(404, f"unknown ASN {asn_id}")
        return row

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
            if cur is not None and cur.close is not None:
                raise OpsError(409, f"reception {cur.id} is being closed")
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
                rec.tids.update(cur.tids)
                with self.ctx.transaction() as s:
                    store.update_reception_asns(s, cur.id, [a.asn_id for a in asns])
                    store.set_asn_session(s, new_ids, cur.id)
            else:
                sid = new_id("rcv", now)
                rec = self._build_reception(sid, [found[a][0] for a in ids], opened_by, now, {})
                with self.ctx.transaction() as s:
                    store.insert_reception(s, sid, ids, opened_by, now)
                    store.set_asn_session(s, ids, sid)
            self._reception = rec
            self.on_active()
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
            self.on_active()
            self._feed_present(rec)
        log.info("ops: reception %s resumed (%d items already at reception)", sid,
                 len(rec.reads))

    def _build_reception(self, sid: str, asns: list[Asn], opened_by: str, opened_at: float,
                         reads: Mapping[str, tuple[float, str]]) -> _Reception:
        session = ReceptionSession(asns, gtin_of=self.catalog.gtin_of,
                                   catalog=self.catalog.catalog,
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

    def _feed_reception(self, rec: _Reception, reads: Iterable[tuple[str, float, str]]) -> None:
        for epc, at, zone in reads:
            if epc in rec.reads:
                continue
            if self.authenticity is not None:  # the chips read with it as it arrives
                rec.tids[epc] = self.authenticity.read_now(epc)
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
        """Close the reception: report, `receiving` events and the HQ message.

        Planned once under the domain lock (the report closes the session: no read feeds it
        after), the events built outside it, then written in chunks of
        `settings.apply_chunk` items (each its own transaction, giving way to the ingest
        between them) and the report last. Until then the reception is `closing` in the
        database: a crash in between leaves it visibly partial (marked so at the next start);
        a failure here keeps the plan and closing again resumes from the next chunk."""
        with self._lock:
            rec = self._reception
            if rec is None or (sid is not None and rec.id != sid):
                raise OpsError(404 if sid else 409, f"no open reception session {sid or ''}"
                               .strip())
            if rec.closing:
                raise OpsError(409, f"reception {rec.id} is being closed")
            rec.closing = True
            fresh = rec.close is None
            if fresh:
                now = time.time()
                report = rec.session.close(at=now)
        try:
            if fresh:
                rec.close = self._close_plan(rec, now, report)
            return self._close(rec)
        finally:
            rec.closing = False

    def _close_plan(self, rec: _Reception, now: float, report: ReceptionReport
                    ) -> ReceptionClose:
        items = self._receiving_events(rec)
        doc = report.to_dict()
        doc["authenticity"], clones, alerts = self._tag_checks(rec, report.received, now)
        return ReceptionClose(now, report, doc, items, clones, alerts)

    def _close(self, rec: _Reception) -> dict[str, Any]:
        p = rec.close
        assert p is not None
        n = max(1, self.settings.apply_chunk)
        while p.done < len(p.items):  # the receiving events and items rows, by chunk
            part = p.items[p.done:p.done + n]
            events = [e for evs, _ in part for e in evs]
            records = self.ctx.records(events)  # encoded outside the lock
            with self._lock, self.ctx.transaction() as s:
                self.ctx.stage(s, events, (), [u for _, u in part], records=records)
                store.closing_reception(s, rec.id, p.done + len(part), len(p.items))
            p.done += len(part)
            self._lock.give_way()
        now, doc = p.now, p.doc
        text = store.dumps(doc)  # once, outside the lock
        message = repo.Message(REPORT_STREAM, self.ctx.topic("reports", "reception"), text,
                               event_id=stable_event_id(self.site_id, "reception_report",
                                                        rec.id))
        with self._lock:
            with self.ctx.transaction() as s:
                self.ctx.stage(s, (), [message, *p.clones])
                for a in p.alerts:  # staff acknowledge and resolve it, as at a return desk
                    AlertWorkflow.raise_alert(s, a.alert_id, "cloned_tag", a.epc, a.zone,
                                              now, detail=a.detail)
                store.close_reception(s, rec.id, now, doc, text)
            if self._reception is rec:
                self._reception = None
        if p.clones and self.authenticity is not None:
            self.authenticity.cloned(len(p.clones))
        log.info("ops: reception %s closed: %s", rec.id, p.report.totals())
        return doc

    def _tag_checks(self, rec: _Reception, received: Sequence[str], now: float
                    ) -> tuple[dict[str, Any], list[repo.Message], list[CloneAlert]]:
        """The received items' chips against the ASNs' commissioning TIDs: a section of the
        report (counts per verdict, each clone named) and a cloned_tag alert per clone, for HQ
        and for the site's alert workflow. A clone is flagged, not refused: the carton is
        here; staff and HQ decide."""
        if self.authenticity is None:
            return {"checked": False}, [], []
        bound = {e: tid for a in rec.asns for e, tid in a.tids}
        counts: dict[str, int] = {v.value: 0 for v in Verdict}
        clones: list[dict[str, Any]] = []
        messages: list[repo.Message] = []
        alerts: list[CloneAlert] = []
        for epc in received:
            seen = tuple(dict.fromkeys((*rec.tids.get(epc, ()),
                                        *self.authenticity.read_now(epc))))
            chk = self.authenticity.check("reception", epc, bound.get(epc), seen)
            counts[chk.verdict.value] += 1
            if chk.verdict is Verdict.MISMATCH:
                zone = rec.reads.get(epc, (now, None))[1]
                clones.append({"epc": epc, "bound_tid": chk.bound, "read_tids": list(chk.seen),
                               "message": chk.reason()})
                msg = cloned_tag(self.site_id, chk, "reception", now, txn=rec.id, zone=zone,
                                 source="reception")
                messages.append(msg)
                alerts.append(CloneAlert(msg.event_id or "", epc, zone, {
                    "point": "reception", "step": "receiving", "txn": rec.id,
                    "bound_tid": chk.bound, "read_tids": list(chk.seen),
                    "message": chk.reason()}))
        return {"checked": True, "counts": counts, "cloned": clones}, messages, alerts

    def _receiving_events(self, rec: _Reception
                          ) -> list[tuple[Sequence[ItemEvent], repo.ItemUpsert]]:
        """One `receiving` event per received item, from the lifecycle rules (desadv = ASN):
        (its events, its items row) per item."""
        out_items: list[tuple[Sequence[ItemEvent], repo.ItemUpsert]] = []
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
                out_items.append((out.events, repo.ItemUpsert(
                    epc, biz_step="receiving", disposition=out.events[0].disposition)))
        return out_items

    def reception_csv(self, sid: str) -> str:
        """The per-GTIN table of a reception as CSV (from the live session when open)."""
        with self._lock:
            rec = self._reception
            if rec is not None and rec.id == sid:
                return reception_csv(rec.session.report())
        doc = self.reception(sid)["report"]
        return lines_csv(doc)

    def busy(self) -> bool:
        """A reception is open (read without the lock: the ops tick's pause check)."""
        return self._reception is not None

    def tick(self) -> None:
        """Scheduler job: close the open reception if a rule of the config says so."""
        self.close_by_rule(time.time())

    def close_by_rule(self, now: float) -> None:
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


__all__ = ["ReceptionService"]
