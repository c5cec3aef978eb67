"""Sequence numbers a site declares skipped (after a restore), and the loss they may hide.

A restored site continues its sequence above anything it numbered before the restore and
announces the numbers it jumped over with its retained head (`skipped`: [first, last, reason,
used_through]). The numbers up to used_through (the highest it had announced; null: unknown)
were used before the restore: the events made after the backup, which HQ holds unless they
were lost on the way. HQ stores each skip once (kind `seq_skip`), never asks for a replay
inside one (no site has those events any more) and moves the contiguous mark over it; what it
lacks inside a skip, up to used_through or the highest number it holds there, is a real,
unrecoverable loss: logged as an error and stored as a `sequence_lost` alert naming the ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from rfidd.hq.store import SiteMessageRow, hq_events, hq_site_messages

log = logging.getLogger(__name__)

SKIP_KIND = "seq_skip"
MAX_SKIPS = 20  # per head message; a site keeps its latest


def parse_skips(site: str, value: Any, at: datetime) -> list[SiteMessageRow]:
    """The `skipped` field of a head message as rows to store; ValueError naming the entry."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_SKIPS:
        raise ValueError(f"skipped: expected a list of at most {MAX_SKIPS} skips")
    rows = []
    for i, entry in enumerate(value):
        ok = (isinstance(entry, list) and len(entry) == 4
              and all(isinstance(x, int) and not isinstance(x, bool) for x in entry[:2])
              and isinstance(entry[2], str) and 1 <= entry[0] <= entry[1] < 2**63
              and (entry[3] is None or (isinstance(entry[3], int)
                                        and not isinstance(entry[3], bool) and entry[3] >= 0)))
        if not ok:
            raise ValueError(f"skipped[{i}]: {str(entry)[:60]!r} is not [first, last, reason, "
                             f"used_through] with 1 <= first <= last")
        rows.append(SiteMessageRow(site, SKIP_KIND, {
            "type": "sequence_skip", "site": site, "first": entry[0], "last": entry[1],
            "reason": entry[2][:200], "used_through": entry[3]}, at))
    return rows


def skip_ranges(conn: Connection, site: str) -> list[tuple[int, int]]:
    """The site's declared skips, in order."""
    m = hq_site_messages
    rows = conn.execute(select(m.c.payload).where(m.c.site == site, m.c.kind == SKIP_KIND))
    return sorted((int(p["first"]), int(p["last"])) for (p,) in rows)


def skip_ranges_of(conn: Connection, sites: list[str]) -> dict[str, list[tuple[int, int]]]:
    """skip_ranges of several sites in one query: site -> its declared skips, in order."""
    m = hq_site_messages
    out: dict[str, list[tuple[int, int]]] = {}
    for site, p in conn.execute(select(m.c.site, m.c.payload)
                                .where(m.c.site.in_(sites), m.c.kind == SKIP_KIND)):
        out.setdefault(site, []).append((int(p["first"]), int(p["last"])))
    return {site: sorted(r) for site, r in out.items()}


def without_skips(gaps: list[tuple[int, int]],
                  skips: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`gaps` minus the skipped numbers (both inclusive ranges)."""
    out = []
    for a, b in gaps:
        parts = [(a, b)]
        for sa, sb in skips:
            nxt = []
            for x, y in parts:
                if sb < x or sa > y:
                    nxt.append((x, y))
                    continue
                if x < sa:
                    nxt.append((x, sa - 1))
                if sb < y:
                    nxt.append((sb + 1, y))
            parts = nxt
        out.extend(parts)
    return out


def record_skips(
    conn: Connection, rows: list[SiteMessageRow], insert: Callable[[Any], Any],
    find_gaps: Callable[[Connection, str, int, int], list[tuple[int, int]]],
) -> list[dict[str, Any]]:
    """Store the skips not yet known and, for each new one, the `sequence_lost` alert of the
    numbers HQ lacks inside it (up to the highest it holds there). Returns those alerts."""
    alerts = []
    stmt = (insert(hq_site_messages)
            .on_conflict_do_nothing(index_elements=["site", "kind", "digest"])
            .returning(hq_site_messages.c.id))
    for r in sorted(rows, key=lambda r: (r.site, r.digest)):
        new = conn.execute(stmt, {"site": r.site, "kind": r.kind, "digest": r.digest,
                                  "payload": r.payload, "received_at": r.received_at}).first()
        if new is None:
            continue
        first, last = int(r.payload["first"]), int(r.payload["last"])
        e = hq_events
        held_top = conn.execute(select(func.max(e.c.seq)).where(
            e.c.site == r.site, e.c.seq >= first, e.c.seq <= last)).scalar()
        used = r.payload.get("used_through")
        top = max(int(held_top or 0), min(int(used or 0), last))
        if top < first:
            log.info("site %s skips sequence %d-%d (%s); HQ holds none of them", r.site, first,
                     last, r.payload["reason"])
            continue
        lost = find_gaps(conn, r.site, first - 1, top)
        if not lost:
            log.info("site %s skips sequence %d-%d (%s); HQ holds every number it saw there",
                     r.site, first, last, r.payload["reason"])
            continue
        n = sum(b - a + 1 for a, b in lost)
        log.error("site %s: %d events lost for good in sequence %s (the site skipped %d-%d: %s; "
                  "HQ never received them and the site no longer has them)", r.site, n,
                  ", ".join(f"{a}-{b}" for a, b in lost[:10]), first, last, r.payload["reason"])
        payload = {"type": "sequence_lost", "site": r.site, "missing": n,
                   "ranges": [list(g) for g in lost[:100]], "skip": [first, last],
                   "reason": r.payload["reason"], "time": r.received_at.isoformat()}
        alert = SiteMessageRow(r.site, "alert", payload, r.received_at)
        conn.execute(insert(hq_site_messages).on_conflict_do_nothing(
            index_elements=["site", "kind", "digest"]),
            {"site": r.site, "kind": "alert", "digest": alert.digest, "payload": payload,
             "received_at": r.received_at})
        alerts.append(payload)
    return alerts


def take_skips(conn: Connection, msgs: list[SiteMessageRow],
               insert: Callable[[Any], Any]) -> tuple[list[SiteMessageRow], int]:
    """Record the skips among a batch's site messages (after its events: a loss is what HQ
    still lacks); returns the other messages and the events found lost for good."""
    from rfidd.hq.gaps import find_gaps

    alerts = record_skips(conn, [m for m in msgs if m.kind == SKIP_KIND], insert,
                          lambda c, site, a, b: find_gaps(c, site, a, b, honour_skips=False))
    return [m for m in msgs if m.kind != SKIP_KIND], sum(int(a["missing"]) for a in alerts)
