"""Monthly partitions of `hq_events` on PostgreSQL: made ahead by a scheduled job, on demand
for an event whose month has none (a site's old backlog, a backfill from last year).

Why event time, not record time: the standard queries that cut by time are eventTime windows
(EQ_bizStep over a day, an item's history in eventTime order), so they prune to a month or two;
a backfill of last year's events lands in last year's partitions, where retention by business
age can drop whole months. GE_recordTime queries look at every partition's received_at index
(one probe each), which is the price of that choice.

A partition is made in its own short transaction (never inside a batch's write), serialised
between HQ processes by an advisory lock, and attached rather than created as PARTITION OF so
that the writers going on meanwhile are not blocked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

AHEAD_MONTHS = 3
CHECK_INTERVAL_S = 6 * 3600.0  # patchable: tests run the job at once
_LOCK_KEY = 0x72666964_68713034  # pg_advisory_xact_lock key: "rfid" "hq04"

Month = tuple[int, int]


def month_of(t: datetime) -> Month:
    u = t.astimezone(UTC)
    return (u.year, u.month)


def add_months(m: Month, k: int) -> Month:
    y, mo = m
    n = y * 12 + (mo - 1) + k
    return (n // 12, n % 12 + 1)


def partition_name(m: Month) -> str:
    return f"hq_events_p{m[0]:04d}{m[1]:02d}"


def existing(conn: Connection) -> set[Month]:
    """The months that have a partition (read from the catalog)."""
    names = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'hq_events'::regclass")).scalars()
    out: set[Month] = set()
    for n in names:
        if n.startswith("hq_events_p") and len(n) == 17 and n[11:].isdigit():
            out.add((int(n[11:15]), int(n[15:17])))
    return out


def is_partitioned(conn: Connection) -> bool:
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
        "WHERE partrelid = 'hq_events'::regclass)")).scalar())


def create(engine: Engine, months: Iterable[Month]) -> list[Month]:
    """Make the partitions of `months` that do not exist yet; the months created."""
    wanted = sorted(set(months))
    if not wanted:
        return []
    made: list[Month] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        have = existing(conn)
        for m in wanted:
            if m in have:
                continue
            nxt = add_months(m, 1)
            name = partition_name(m)
            # CREATE + ATTACH, not CREATE ... PARTITION OF: ATTACH takes SHARE UPDATE EXCLUSIVE
            # on hq_events, which writers' ROW EXCLUSIVE does not wait for (nor it for them).
            conn.execute(text(f"CREATE TABLE {name} (LIKE hq_events INCLUDING DEFAULTS)"))
            conn.execute(text(
                f"ALTER TABLE hq_events ATTACH PARTITION {name} FOR VALUES "
                f"FROM ('{m[0]:04d}-{m[1]:02d}-01 00:00:00+00') "
                f"TO ('{nxt[0]:04d}-{nxt[1]:02d}-01 00:00:00+00')"))
            made.append(m)
    for m in made:
        log.info("created partition %s", partition_name(m))
    return made


def ensure_ahead(engine: Engine, now: datetime | None = None,
                 ahead: int = AHEAD_MONTHS) -> list[Month]:
    """This month's and the next `ahead` months' partitions."""
    cur = month_of(now or datetime.now(UTC))
    return create(engine, [add_months(cur, k) for k in range(ahead + 1)])


class PartitionKeeper:
    """The scheduled job: every CHECK_INTERVAL_S, the coming months' partitions exist."""

    def __init__(self, engine: Engine, ahead: int = AHEAD_MONTHS,
                 interval_s: float | None = None) -> None:
        self.engine = engine
        self.ahead = ahead
        self.interval_s = CHECK_INTERVAL_S if interval_s is None else interval_s
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hq-partitions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ensure_ahead(self.engine, ahead=self.ahead)
            except Exception:  # the database is away: the next run tries again
                log.exception("creating the coming months' partitions failed")
            self.runs += 1
            self._stop.wait(self.interval_s)
