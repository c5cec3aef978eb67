"""PostgreSQL's batch write of events: one COPY, one statement.

The batch is COPYed into a session-local staging table (created once per connection), then one
statement with data-modifying CTEs: claim the eventIDs in `hq_event_ids` (ON CONFLICT DO
NOTHING, in key order so two consumers take their row locks in the same order), insert the
claimed events into the partitioned `hq_events`, and their EPC rows (unnest of the staged EPC
array; `listed` worked out from the JSON in SQL). Two round trips per batch, no per-row Python
beyond the COPY row itself, dedup exact: only an eventID this transaction claimed is stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DataError as SaDataError

from rfidd.hq.documents import EventRow

COLS = ("event_id", "site", "type", "event_time", "action", "biz_step", "disposition",
        "read_point", "biz_location", "biz_transactions", "raw", "received_at", "seq")
_C = ", ".join(COLS)
_SC = ", ".join(f"s.{c}" for c in COLS)

STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS hq_events_stage (event_id text, site text, type text, "
    "event_time timestamptz, action text, biz_step text, disposition text, read_point text, "
    "biz_location text, biz_transactions jsonb, raw jsonb, received_at timestamptz, seq bigint, "
    "epcs text[]) ON COMMIT DELETE ROWS")

INSERT = f"""
WITH new AS (
    INSERT INTO hq_event_ids (event_id, event_time)
    SELECT event_id, event_time FROM hq_events_stage ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING RETURNING event_id
), ev AS (
    INSERT INTO hq_events ({_C})
    SELECT {_SC} FROM hq_events_stage s JOIN new USING (event_id) RETURNING 1
), ep AS (
    INSERT INTO hq_event_epcs (event_id, epc, event_time, listed)
    SELECT s.event_id, x.epc, s.event_time,
           coalesce(s.raw->'epcList' ? x.epc, false) OR coalesce(s.raw->'childEPCs' ? x.epc, false)
    FROM hq_events_stage s JOIN new USING (event_id) CROSS JOIN LATERAL unnest(s.epcs) AS x(epc)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev)
"""

STAGED = "rfidd_hq_stage"  # key in the pooled connection's info: the temp table exists


def store_events(conn: Connection, rows: Sequence[EventRow], received_at: datetime) -> int:
    """Store the rows (unique eventIDs) not held yet; how many were stored. A row the
    database refuses (a NUL byte, a time out of range) raises SQLAlchemy's DataError, so the
    consumer can isolate the message."""
    import psycopg

    try:
        return _store(conn, rows, received_at)
    except psycopg.DataError as exc:
        raise SaDataError("COPY hq_events_stage", None, exc) from exc


def _store(conn: Connection, rows: Sequence[EventRow], received_at: datetime) -> int:
    pooled: Any = conn.connection
    cur = pooled.dbapi_connection.cursor()
    if not pooled.info.get(STAGED):
        cur.execute(STAGE_DDL)
        pooled.info[STAGED] = True
    dumps = json.dumps
    with cur.copy(f"COPY hq_events_stage ({_C}, epcs) FROM STDIN") as cp:
        write = cp.write_row
        for ev in rows:
            bt = ev.biz_transactions
            write((ev.event_id, ev.site, ev.type, ev.event_time, ev.action, ev.biz_step,
                   ev.disposition, ev.read_point, ev.biz_location,
                   None if bt is None else dumps(bt), dumps(ev.raw), received_at, ev.seq,
                   list(ev.epcs)))
    cur.execute(INSERT)
    row = cur.fetchone()
    return int(row[0]) if row else 0
