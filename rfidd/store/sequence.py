"""The site's gap-free event sequence and the journal replay.

Every journaled event gets the next number (1, 2, 3...) in the transaction that journals it,
so HQ can tell a lost message from a quiet site; `cmd/replay` queues journal events again by
number. Functions take the caller's Session, like rfidd.store.repo.
"""

from __future__ import annotations

import time

from sqlalchemy import Table, func, literal, select
from sqlalchemy.orm import Session

from .models import Event, EventSequence, OutboxMessage, SequenceSkip

EPCIS_STREAM = "epcis"
EPCIS_TOPIC = "epcis"
REPLAY_STREAM = "replay"

def take_seq(session: Session, n: int) -> int:
    """Reserve `n` consecutive sequence numbers; returns the first. Holds the counter's row
    lock until the caller's transaction ends (SQLite: the write lock already serialises)."""
    t: Table = EventSequence.__table__  # type: ignore[assignment]
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    # Plain SQL: the ingest takes numbers on every batch with events.
    row = conn.exec_driver_sql(f"SELECT last_seq FROM {t.name} WHERE id = 1"
                               + ("" if sqlite else " FOR UPDATE")).scalar_one_or_none()
    if row is None:  # a database built by create_all rather than the migrations
        row = int(session.scalar(select(func.coalesce(func.max(Event.seq), 0))) or 0)
        session.execute(t.insert().values(id=1, last_seq=row + n))
    elif n:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(f"UPDATE {t.name} SET last_seq = {mark} WHERE id = 1",
                             (int(row) + n,))
    return int(row) + 1


def last_seq(session: Session) -> int:
    """The highest sequence number journaled so far (0 before the first event)."""
    t = EventSequence.__table__
    v = session.execute(select(t.c.last_seq).where(t.c.id == 1)).scalar_one_or_none()
    return int(v) if v is not None else 0


def published_through(session: Session) -> int:
    """The highest N such that every event 1..N was acknowledged by the broker (or failed):
    what the site tells HQ it has sent, so HQ never mistakes the queue for a loss."""
    o = OutboxMessage
    first_pending = session.scalar(
        select(func.min(o.seq)).where(
            o.sent_at.is_(None), o.failed_at.is_(None), o.event_id.is_not(None),
            o.seq.is_not(None),
        )
    )
    last = last_seq(session)
    return last if first_pending is None else min(last, int(first_pending) - 1)


def seq_since(session: Session, since: float) -> int | None:
    """The first sequence number journaled at or after `since` (None: nothing since)."""
    v = session.scalar(select(func.min(Event.seq)).where(Event.created_at >= since))
    return int(v) if v is not None else None


def queue_replay(session: Session, first: int, last: int, now: float | None = None) -> int:
    """Queue journal events `first`..`last` (inclusive) again for HQ, in sequence order.

    A replayed copy has no outbox event_id (the original's row may still exist) and keeps its
    seq; an event still pending in the outbox is not queued twice, so HQ asking again while
    the link is down does not grow the queue. Returns how many rows were queued.
    """
    now = time.time() if now is None else now
    if last < first:
        return 0
    o: Table = OutboxMessage.__table__  # type: ignore[assignment]
    e: Table = Event.__table__  # type: ignore[assignment]
    pending = select(o.c.seq).where(
        o.c.seq.is_not(None), o.c.seq >= first, o.c.seq <= last,
        o.c.sent_at.is_(None), o.c.failed_at.is_(None),
    )
    src = (
        select(
            literal(EPCIS_STREAM), literal(EPCIS_TOPIC), e.c.payload, literal(now), e.c.seq,
        )
        .where(e.c.seq >= first, e.c.seq <= last, e.c.seq.not_in(pending))
        .order_by(e.c.seq)
    )
    ins = o.insert().from_select(["stream", "topic", "payload", "created_at", "seq"], src)
    return len(session.execute(ins.returning(o.c.id)).all())


# -- after a restore ---------------------------------------------------------------------------
# Numbers a restored site may have used after its backup, beyond the highest it announced: the
# retained head is republished at most every head interval, so a daemon killed between two
# announcements numbered more than it said. Far above what one interval can number.
RESTORE_MARGIN = 100_000
# No head to learn (no broker at start, none retained): the backup may be weeks old, so jump
# far; numbers are cheap (BigInteger) and HQ reports a loss only among numbers it saw.
RESTORE_JUMP_UNKNOWN = 10_000_000


def mark_restored(session: Session, at: float) -> None:
    """`rfidd restore`: the numbers after this database's last_seq may already be HQ's."""
    t: Table = EventSequence.__table__  # type: ignore[assignment]
    take_seq(session, 0)  # the counter row exists
    session.execute(t.update().where(t.c.id == 1).values(restored_at=at))


def restored_at(session: Session) -> float | None:
    """When the database was restored and its sequence not yet continued (None: it was)."""
    t = EventSequence.__table__
    v = session.execute(select(t.c.restored_at).where(t.c.id == 1)).scalar_one_or_none()
    return float(v) if v is not None else None


def continue_after_restore(session: Session, announced: int | None, reason: str,
                           now: float, *, exact: bool = False) -> tuple[int, int] | None:
    """Continue the sequence above anything the site may have numbered before the restore:
    above `announced` (the highest number of its retained head) plus RESTORE_MARGIN (none if
    `exact`: the head of a clean stop), or RESTORE_JUMP_UNKNOWN above the restored last_seq
    when the head is unknown (None). The numbers jumped over are a known skip (never used
    again, announced to HQ with `reason`); clears the restored mark. Returns the skip (first,
    last), None when nothing was numbered after the backup."""
    t: Table = EventSequence.__table__  # type: ignore[assignment]
    local = take_seq(session, 0) - 1
    target = (local + RESTORE_JUMP_UNKNOWN if announced is None
              else max(local, announced + (0 if exact else RESTORE_MARGIN)))
    session.execute(t.update().where(t.c.id == 1).values(last_seq=target, restored_at=None))
    if target == local:
        return None
    session.add(SequenceSkip(first_seq=local + 1, last_seq=target, reason=reason[:200],
                             used_through=announced, created_at=now))
    return local + 1, target


def skips(session: Session, limit: int = 20) -> list[tuple[int, int, str, int | None]]:
    """The latest known skips (first, last, reason, used_through), oldest first: announced
    with the head so HQ never waits for them and reports what it lacks among those used."""
    rows = session.execute(
        select(SequenceSkip.first_seq, SequenceSkip.last_seq, SequenceSkip.reason,
               SequenceSkip.used_through)
        .order_by(SequenceSkip.id.desc()).limit(limit)).all()
    return [(int(a), int(b), str(r), None if u is None else int(u))
            for a, b, r, u in reversed(rows)]
