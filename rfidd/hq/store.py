"""HQ tables and the batch writer.

A metadata of its own (never the site daemon's), migrated by its own Alembic scripts with their
own version table `hq_alembic_version`, so an HQ schema can share a database with anything.
Deduplication is the database's job: an event is stored only by the transaction that claims its
eventID in `hq_event_ids` (primary key, INSERT ... ON CONFLICT DO NOTHING), which also holds when
several consumers race on the same event. On PostgreSQL `hq_events` is partitioned by month of
eventTime (rfidd.hq.partitions; the write path is rfidd.hq.pgwrite); SQLite keeps one table.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url

from rfidd.hq import partitions, pgwrite, sqlitewrite
from rfidd.hq.documents import EventRow
from rfidd.store.db import create_db_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "hq_alembic_version"
# The "site" of events captured over POST /capture: "@" and the token's name (no site id
# starts with it: rfidd.config's pattern).
CAPTURE_SOURCE = "@"

BigId = BigInteger().with_variant(Integer(), "sqlite")


def ident(n: int) -> String:
    """An identifier column (URI, code): "C" collation on PostgreSQL (hq0006), so index
    comparisons are byte comparisons; SQLite compares bytes already."""
    return String(n).with_variant(String(n, collation="C"), "postgresql")

Json = JSON().with_variant(JSONB(), "postgresql")
Time = DateTime(timezone=True)

metadata = MetaData()


def _with_value(column: str) -> dict[str, Any]:
    """A partial index's predicate (hq0006): an event without a value costs no entry, and the
    queries' strict comparisons on the column imply it, so both databases still use it."""
    where = text(f"{column} IS NOT NULL")
    return {"postgresql_where": where, "sqlite_where": where}


hq_events = Table(
    "hq_events",
    metadata,
    # PostgreSQL: PRIMARY KEY (id, event_time), the partition key must be in it.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", ident(512), nullable=False),
    Column("site", ident(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("event_time", Time, nullable=False),
    Column("action", String(16)),
    Column("biz_step", ident(256)),
    Column("disposition", String(256)),
    Column("read_point", ident(512)),
    Column("biz_location", ident(512)),
    Column("biz_transactions", Json),
    Column("raw", Json, nullable=False),
    Column("received_at", Time, nullable=False),
    Column("seq", BigInteger),  # the site's gap-free number (None: captured from elsewhere)
    Index("ix_hq_events_event_id", "event_id"),
    Index("ix_hq_events_site_seq", "site", "seq", **_with_value("seq")),
    Index("ix_hq_events_step_time", "biz_step", "event_time"),
    # GE_recordTime pages are read in (recordTime, id) order: one range scan from the token.
    Index("ix_hq_events_received_at", "received_at", "id"),
    # EQ_bizLocation / EQ_readPoint come back in record (id) order: these read a page directly.
    Index("ix_hq_events_location_id", "biz_location", "id", **_with_value("biz_location")),
    Index("ix_hq_events_read_point_id", "read_point", "id"),
)

# eventID uniqueness (a partitioned table cannot have it without the partition key); the
# event's time is kept so a lookup by eventID prunes to its month.
hq_event_ids = Table(
    "hq_event_ids",
    metadata,
    Column("event_id", ident(512), primary_key=True),
    Column("event_time", Time, nullable=False),
)

# event_time is repeated here so "where is it now" is one index range scan of the key.
# listed: the EPC is in epcList/childEPCs (MATCH_epc), not only parentID/input/output (anyEPC).
hq_event_epcs = Table(
    "hq_event_epcs",
    metadata,
    Column("event_id", ident(512), nullable=False),
    Column("epc", ident(512), nullable=False),
    Column("event_time", Time, nullable=False),
    Column("listed", Boolean, nullable=False, server_default=true()),
    # One index (hq0006): an EPC's events in eventTime order, the MATCH_ probes (all three
    # given) and, in C collation, an idpat's prefix range.
    PrimaryKeyConstraint("epc", "event_time", "event_id", name="hq_event_epcs_pkey"),
)

hq_sites = Table(
    "hq_sites",
    metadata,
    Column("site", String(64), primary_key=True),
    Column("status", String(16)),
    Column("status_at", Time),
    Column("last_seen", Time),
    Column("name", String(256)),
    Column("registered_at", Time),  # None: heard of, never registered (`rfidd hq site add`)
    Column("published_through", BigInteger),  # the site's announced head
    Column("contiguous_seq", BigInteger, nullable=False, server_default="0"),  # all 1..N held
    Column("gap_since", Time),  # first seen missing events; None while complete
    Column("rejected", BigInteger, nullable=False, server_default="0"),  # unregistered: dropped
)

# Alerts and reports: kept verbatim; a redelivered copy (same bytes) is stored once.
hq_site_messages = Table(
    "hq_site_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("site", String(64), nullable=False),
    Column("kind", String(80), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("payload", Json, nullable=False),
    Column("received_at", Time, nullable=False),
    UniqueConstraint("site", "kind", "digest", name="uq_hq_site_messages_digest"),
    Index("ix_hq_site_messages_site_time", "site", "received_at"),
)


# Integrators of the EPCIS REST interface: only a SHA-256 of each token is kept (the tokens are
# 256-bit random values, so a fast hash is enough; nobody can brute-force them back).
hq_tokens = Table(
    "hq_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("scope", String(16), nullable=False),  # read | capture
    Column("digest", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
    UniqueConstraint("digest", name="uq_hq_tokens_digest"),
)

hq_queries = Table(
    "hq_queries",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("query", Json, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
)

hq_captures = Table(
    "hq_captures",
    metadata,
    Column("capture_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("events", Integer, nullable=False),
    Column("stored", Integer, nullable=False),
)


# The chain's catalog, as HQ last published it to the stores (names, sizes, colours).
hq_products = Table(
    "hq_products",
    metadata,
    Column("gtin", String(14), primary_key=True),
    Column("sku", String(64)),
    Column("name", String(256)),
    Column("size", String(32)),
    Column("colour", String(64)),
    Column("category", String(64)),
    Column("price", Numeric(12, 2)),
    Column("currency", String(3)),
    Column("updated", Time, nullable=False),
    Index("ix_hq_products_sku", "sku"),
)


class HqDatabaseError(Exception):
    """The HQ database cannot be opened or migrated; the message names the URL (no password)."""


@dataclass(frozen=True, slots=True)
class StatusRow:
    site: str
    status: str
    at: datetime
    retained: bool  # a retained copy replayed on subscribe: says the state, not that it is live


@dataclass(frozen=True, slots=True)
class SiteMessageRow:
    site: str
    kind: str  # "alert" or "report/{kind}"
    payload: Any
    received_at: datetime

    @property
    def digest(self) -> str:
        canon = json.dumps(self.payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(slots=True)
class Batch:
    events: list[EventRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    site_messages: list[SiteMessageRow] = field(default_factory=list)
    seen: dict[str, datetime] = field(default_factory=dict)  # site -> latest live message
    heads: dict[str, int] = field(default_factory=dict)  # site -> announced published_through
    trusted: bool = False  # an authenticated capture: not subject to the site registry
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def saw(self, site: str, at: datetime) -> None:
        prev = self.seen.get(site)
        if prev is None or at > prev:
            self.seen[site] = at

    def __bool__(self) -> bool:
        return bool(self.events or self.statuses or self.site_messages or self.seen
                    or self.heads)


@dataclass(frozen=True, slots=True)
class BatchResult:
    stored: int
    duplicates: int
    messages_stored: int
    message_duplicates: int
    rejected: int = 0  # events and messages of unregistered sites, not stored
    lost: int = 0  # events a site skipped (restore) that HQ lacks: lost for good
    # The eventIDs this batch stored (query subscriptions push them); not part of equality.
    event_ids: tuple[str, ...] = field(default=(), compare=False)


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def utc(t: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: every time stored here is UTC."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class HqStore:
    """The HQ database: schema upgrade and the one-transaction-per-batch writer."""

    def __init__(self, engine: Engine, *, known_sites_only: bool = False) -> None:
        self.engine = engine
        # Store only what registered sites send (`rfidd hq site add`); count the rest.
        self.known_sites_only = known_sites_only
        self.dialect = engine.dialect.name
        self._months: set[partitions.Month] = set()  # months known to have a partition
        if self.dialect not in ("postgresql", "sqlite"):
            raise HqDatabaseError(f"unsupported database dialect {self.dialect}")

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, known_sites_only: bool = False) -> HqStore:
        shown = make_url(url).render_as_string(hide_password=True)
        try:
            store = cls(create_db_engine(url), known_sites_only=known_sites_only)
        except HqDatabaseError:
            raise
        except ModuleNotFoundError as exc:
            raise HqDatabaseError(f"{shown}: the database driver is not installed ({exc}); "
                                  "for PostgreSQL: pip install 'rfidd[postgres]'") from exc
        except Exception as exc:
            raise HqDatabaseError(f"{shown}: {exc}") from exc
        if migrate:
            try:
                store.upgrade()
            except Exception as exc:
                store.dispose()
                raise HqDatabaseError(f"{shown}: schema upgrade failed: {exc}") from exc
        return store

    def upgrade(self, revision: str = "head") -> None:
        cfg = alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writing

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def write_batch(self, batch: Batch) -> BatchResult:
        """Store a batch in one transaction; duplicates (by eventID) are counted, not stored.

        Rows are written in key order so two consumers writing overlapping batches take their
        row locks in the same order and cannot deadlock.
        """
        stored = messages_stored = rejected = lost = 0
        inserted: set[str] = set()
        events, site_messages = batch.events, batch.site_messages
        if self.dialect == "postgresql" and events:
            self._partitions_for(events)
        with self.engine.begin() as conn:
            if self.known_sites_only and not batch.trusted:
                events, site_messages, rejected = self._registered_only(conn, batch)
            unique: dict[str, EventRow] = {}
            for ev in events:
                unique.setdefault(ev.event_id, ev)
            rows = [unique[k] for k in sorted(unique)]
            if rows and self.dialect == "postgresql":
                inserted = pgwrite.store_events(conn, rows, batch.received_at)
            elif rows:
                inserted = sqlitewrite.store_events(conn, rows, batch.received_at)
            stored = len(inserted)
            numbered = {ev.site for ev in rows if ev.seq is not None}
            self._update_sites(conn, batch, numbered)
            if any(m.kind == "seq_skip" for m in site_messages):  # after this batch's events
                from rfidd.hq.skips import take_skips

                site_messages, lost = take_skips(conn, site_messages, self._insert)
            messages_stored = self._insert_site_messages(conn, site_messages)
            from rfidd.hq.marks import advance

            advance(conn, sorted(numbered | set(batch.heads)), self.dialect)
        return BatchResult(
            stored=stored,
            duplicates=len(events) - stored,
            messages_stored=messages_stored,
            message_duplicates=len(site_messages) - messages_stored,
            rejected=rejected,
            lost=lost,
            event_ids=tuple(sorted(inserted)),
        )

    def _partitions_for(self, events: Sequence[EventRow]) -> None:
        """On demand: a partition for every month the batch's events fall in (their own
        transaction, before the batch's; usually all are known and this is a set lookup)."""
        months = {partitions.month_of(ev.event_time) for ev in events}
        if months <= self._months:
            return
        with self.engine.connect() as conn:
            if not partitions.is_partitioned(conn):  # a database not migrated to hq0005 yet
                self._months |= months
                return
            self._months |= partitions.existing(conn)
        missing = months - self._months
        if missing:
            partitions.create(self.engine, missing)
            self._months |= missing

    def _registered_only(
        self, conn: Connection, batch: Batch
    ) -> tuple[list[EventRow], list[SiteMessageRow], int]:
        """The batch's events and messages from registered sites; the others are counted on
        their site's row (`rfidd hq sites` shows them)."""
        named = {ev.site for ev in batch.events} | {m.site for m in batch.site_messages}
        if not named:
            return batch.events, batch.site_messages, 0
        known = set(conn.execute(
            select(hq_sites.c.site).where(hq_sites.c.site.in_(sorted(named)),
                                          hq_sites.c.registered_at.is_not(None))
        ).scalars())
        events = [ev for ev in batch.events if ev.site in known]
        msgs = [m for m in batch.site_messages if m.site in known]
        dropped: dict[str, int] = {}
        for site in [ev.site for ev in batch.events] + [m.site for m in batch.site_messages]:
            if site not in known:
                dropped[site] = dropped.get(site, 0) + 1
        if dropped:
            conn.execute(self._insert(hq_sites).on_conflict_do_nothing(),
                         [{"site": s} for s in sorted(dropped)])
            for site in sorted(dropped):
                conn.execute(hq_sites.update().where(hq_sites.c.site == site)
                             .values(rejected=hq_sites.c.rejected + dropped[site]))
        return events, msgs, sum(dropped.values())

    def _update_sites(self, conn: Connection, batch: Batch, numbered: set[str]) -> None:
        """Statuses, heads, last seen; and a row for every site whose numbered events came
        (a capture with rfidd:seq has no `seen`): its contiguous mark is kept there, and
        without it every batch walked that site's numbers from 0 again."""
        touched = sorted({s.site for s in batch.statuses} | set(batch.seen) | set(batch.heads)
                         | numbered)
        if not touched:
            return
        # Make every site row exist first (in key order), then update in the same order.
        conn.execute(
            self._insert(hq_sites).on_conflict_do_nothing(),
            [{"site": s} for s in touched],
        )
        for st in batch.statuses:  # arrival order: the last status wins
            conn.execute(
                hq_sites.update()
                .where(hq_sites.c.site == st.site)
                .values(status=st.status, status_at=st.at)
            )
        greatest = func.greatest if self.dialect == "postgresql" else func.max
        for site in sorted(batch.heads):
            head = literal(batch.heads[site], BigInteger)
            conn.execute(
                hq_sites.update()
                .where(hq_sites.c.site == site)
                .values(published_through=greatest(
                    func.coalesce(hq_sites.c.published_through, head), head))
            )
        for site in sorted(batch.seen):
            at = literal(batch.seen[site], Time)
            conn.execute(
                hq_sites.update()
                .where(hq_sites.c.site == site)
                .values(last_seen=greatest(func.coalesce(hq_sites.c.last_seen, at), at))
            )

    def _insert_site_messages(self, conn: Connection, msgs: Iterable[SiteMessageRow]) -> int:
        params = sorted(
            (
                {"site": m.site, "kind": m.kind, "digest": m.digest, "payload": m.payload,
                 "received_at": m.received_at}
                for m in msgs
            ),
            key=lambda p: (p["site"], p["kind"], p["digest"]),
        )
        if not params:
            return 0
        stmt = (
            self._insert(hq_site_messages)
            .on_conflict_do_nothing(index_elements=["site", "kind", "digest"])
            .returning(hq_site_messages.c.id)
        )
        return len(conn.execute(stmt, params).all())
