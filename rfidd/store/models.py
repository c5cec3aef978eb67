"""Tables of the site database (SQLAlchemy 2.x typed ORM).

Times are float seconds since the epoch (UTC), the unit of the domain (`ItemEvent.event_time`,
`TagRead.seen_at`): no time-zone ambiguity between SQLite and PostgreSQL, and no conversion on
the hot ingest path. Reports convert at the edge.

Schema changes go through a new Alembic revision in `migrations/versions/`, never by editing
these classes alone: the migrations, not `create_all`, build every real database.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names: Alembic needs them to alter constraints, notably on SQLite.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements an INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Time = Float(precision=53)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Product(Base):
    """The catalog entry of a GTIN (pushed by HQ)."""

    __tablename__ = "products"

    gtin: Mapped[str] = mapped_column(String(14), primary_key=True)
    sku: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(256))
    size: Mapped[str | None] = mapped_column(String(32))
    colour: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(64))
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    updated: Mapped[float] = mapped_column(Time)
    cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))  # in `currency`, when known


class Item(Base):
    """One tagged item: identity, where it was last seen, its lifecycle state."""

    __tablename__ = "items"

    epc: Mapped[str] = mapped_column(String(64), primary_key=True)  # upper-case hex
    epc_uri: Mapped[str | None] = mapped_column(String(128))
    gtin: Mapped[str | None] = mapped_column(String(14), index=True)
    serial: Mapped[str | None] = mapped_column(String(32))
    zone: Mapped[str | None] = mapped_column(String(64), index=True)  # last known zone
    biz_step: Mapped[str | None] = mapped_column(String(64))  # last CBV business step
    disposition: Mapped[str | None] = mapped_column(String(64), index=True)  # CBV disposition
    first_seen: Mapped[float | None] = mapped_column(Time)
    last_seen: Mapped[float | None] = mapped_column(Time)
    updated: Mapped[float] = mapped_column(Time)


class ZonePresence(Base):
    """Items present right now, one row per item: what the presence tracker reloads on restart.

    A departed item loses its row (its last zone stays in `items.zone`).
    """

    __tablename__ = "zone_presence"

    epc: Mapped[str] = mapped_column(
        String(64), ForeignKey("items.epc", ondelete="CASCADE"), primary_key=True
    )
    zone: Mapped[str] = mapped_column(String(64), index=True)
    since: Mapped[float] = mapped_column(Time)
    last_seen: Mapped[float] = mapped_column(Time)
    reader: Mapped[str | None] = mapped_column(String(64))
    antenna: Mapped[int | None] = mapped_column(Integer)
    rssi_dbm: Mapped[float | None] = mapped_column(Float)


class Event(Base):
    """Journal of business events, kept after their outbox rows are purged.

    The unique `event_id` is what makes a replayed batch a no-op even after the outbox was
    purged.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_time: Mapped[float] = mapped_column(Time, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(16))
    biz_step: Mapped[str | None] = mapped_column(String(64))
    disposition: Mapped[str | None] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))
    epc_count: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[float] = mapped_column(Time)
    # The site's gap-free sequence number (1, 2, 3...): how HQ tells a lost event from none.
    seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_events_seq", "seq", unique=True),)


class EventSequence(Base):
    """The one counter row behind `Event.seq`: taken under the write transaction's row lock,
    so numbers are handed out in commit order, and a rolled-back batch gives its back."""

    __tablename__ = "event_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Set by `rfidd restore`: the numbers after last_seq may already be HQ's; cleared at the
    # start that continued the sequence after the highest number ever announced.
    restored_at: Mapped[float | None] = mapped_column(Float)


class SequenceSkip(Base):
    """Numbers the site jumped over (after a restore): never used again, announced to HQ."""

    __tablename__ = "sequence_skips"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    first_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    # The highest number the site had announced before the restore (None: unknown): HQ
    # counts every number up to it that it lacks in the skip as lost.
    used_through: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class OutboxMessage(Base):
    """A message for HQ; `id` order is publish order. Pending while `sent_at` is NULL."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(32))  # epcis, report, alert, status...
    topic: Mapped[str] = mapped_column(String(256))  # suffix after {prefix}/{site}/
    payload: Mapped[str] = mapped_column(Text)  # JSON
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Time)
    sent_at: Mapped[float | None] = mapped_column(Time)
    # A row that can never be published (its payload cannot be built): out of the queue,
    # kept for inspection.
    failed_at: Mapped[float | None] = mapped_column(Time)
    error: Mapped[str | None] = mapped_column(Text)
    # The journal's sequence number of an EPCIS row (an original or a replayed copy).
    seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_outbox_sent_at_id", "sent_at", "id"),
        Index("ix_outbox_seq", "seq"),
    )


class AuditRecord(Base):
    """One write through the local API: who (token name or opaque staff id), when, from where,
    what (method, path, body excerpt) and the answer's status."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Time, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)
