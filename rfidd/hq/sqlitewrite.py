"""SQLite's batch write of events (PostgreSQL's is rfidd.hq.pgwrite): the same claim-then-store
order, by INSERT ... ON CONFLICT DO NOTHING RETURNING, since SQLite has no COPY."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite

from rfidd.hq.documents import EventRow, listed_epcs


def store_events(conn: Connection, rows: Sequence[EventRow], received_at: datetime) -> set[str]:
    """Claim the eventIDs, then store the claimed events and their EPC rows; the eventIDs
    this transaction claimed."""
    from rfidd.hq.store import hq_event_epcs, hq_event_ids, hq_events
    claimed = {r[0] for r in conn.execute(
        sqlite.insert(hq_event_ids).on_conflict_do_nothing(index_elements=["event_id"])
        .returning(hq_event_ids.c.event_id),
        [{"event_id": ev.event_id, "event_time": ev.event_time} for ev in rows])}
    new = [ev for ev in rows if ev.event_id in claimed]
    if not new:
        return claimed
    conn.execute(hq_events.insert(), [
        {"event_id": ev.event_id, "site": ev.site, "type": ev.type,
         "event_time": ev.event_time, "action": ev.action, "biz_step": ev.biz_step,
         "disposition": ev.disposition, "read_point": ev.read_point,
         "biz_location": ev.biz_location, "biz_transactions": ev.biz_transactions,
         "raw": ev.raw, "received_at": received_at, "seq": ev.seq}
        for ev in new])
    epc_rows = [{"event_id": ev.event_id, "epc": epc, "event_time": ev.event_time,
                 "listed": epc in listed_epcs(ev.raw)}
                for ev in new for epc in ev.epcs]
    if epc_rows:
        conn.execute(hq_event_epcs.insert(), epc_rows)
    return claimed
