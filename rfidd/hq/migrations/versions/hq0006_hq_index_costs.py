"""What each stored event costs in index work (PostgreSQL's write path is mostly that).

Partial indexes on `hq_events` for the columns a query only ever compares for equality (or
a range) and many events leave empty: an event without a value costs no index entry.

`ix_hq_events_site_seq` serves the sequence walk (`seq > n`) and holds only events with a
site sequence number (captured events have none); `ix_hq_events_location_id` serves
EQ_bizLocation and holds only events with a bizLocation (EQ_ never matches a missing one).
Both predicates are implied by the queries' own conditions (a strict comparison implies NOT
NULL), so PostgreSQL and SQLite still pick them. Measured: about a tenth of the index work of
a batch of events without seq or bizLocation (the benchmark's); none for site events, which
have both.

`hq_event_epcs` has one index instead of two: its primary key is (epc, event_time,
event_id), which serves the item lookups (an EPC, in eventTime order), the MATCH_ probes
(all three given), and, in C collation, an idpat's prefix range; the former primary key
(event_id, epc) and ix_hq_event_epcs_epc_time go. Measured with the above: 0.56 -> 0.60.

Identifiers in "C" collation (PostgreSQL): eventIDs, EPCs, sites, readPoint, bizLocation and
bizStep are URIs and codes, compared for equality and prefixes, never sorted for people; the
database's linguistic collation (C.UTF-8, en_US.UTF-8...) made every index comparison a
strcoll(). With "C" it is a memcmp, an index's order is the code-point order Python sorts in
(the writer's lock order), and `LIKE 'prefix%'` (MATCH_epc with an idpat) can use the index.
Measured (rfidd.benchmark.parts.hq_store, CPU seconds of client and server): floor/store from
0.535 to 0.566 on a C.UTF-8 database. The columns' indexes are rebuilt: minutes on a large HQ.

Revision ID: hq0006_hq_index_costs
Revises: hq0005_hq_partitions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "hq0006_hq_index_costs"
down_revision: str | None = "hq0005_hq_partitions"
branch_labels: str | None = None
depends_on: str | None = None

PARTIAL = (
    ("ix_hq_events_site_seq", ["site", "seq"], "seq IS NOT NULL"),
    ("ix_hq_events_location_id", ["biz_location", "id"], "biz_location IS NOT NULL"),
)

# (table, column, length): the identifiers given "C" collation on PostgreSQL
C_COLUMNS = (
    ("hq_event_ids", "event_id", 512), ("hq_events", "event_id", 512),
    ("hq_events", "site", 64), ("hq_events", "biz_step", 256),
    ("hq_events", "read_point", 512), ("hq_events", "biz_location", 512),
    ("hq_event_epcs", "event_id", 512), ("hq_event_epcs", "epc", 512),
)


def _collate(collation: str) -> None:
    for table, column, n in C_COLUMNS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR({n}) '
                   f'COLLATE "{collation}"')


def _epcs_key(cols: list[str], index: bool) -> None:
    """hq_event_epcs' primary key on `cols`; the (epc, event_time) index only with `index`."""
    if index:
        op.create_index("ix_hq_event_epcs_epc_time", "hq_event_epcs", ["epc", "event_time"])
    else:
        op.drop_index("ix_hq_event_epcs_epc_time", "hq_event_epcs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE hq_event_epcs DROP CONSTRAINT hq_event_epcs_pkey")
        op.create_primary_key("hq_event_epcs_pkey", "hq_event_epcs", cols)
        return
    # SQLite cannot change a primary key: the table is made again with it, rows copied.
    op.create_table(
        "hq_event_epcs_new",
        sa.Column("event_id", sa.String(512), nullable=False),
        sa.Column("epc", sa.String(512), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint(*cols, name="hq_event_epcs_pkey"))
    op.execute("INSERT INTO hq_event_epcs_new (event_id, epc, event_time, listed) "
               "SELECT event_id, epc, event_time, listed FROM hq_event_epcs")
    if index:  # made on the old table above: it goes with it, made again on the new one
        op.drop_index("ix_hq_event_epcs_epc_time", "hq_event_epcs")
    op.drop_table("hq_event_epcs")
    op.rename_table("hq_event_epcs_new", "hq_event_epcs")
    if index:
        op.create_index("ix_hq_event_epcs_epc_time", "hq_event_epcs", ["epc", "event_time"])


def upgrade() -> None:
    for name, cols, where in PARTIAL:
        op.drop_index(name, "hq_events")
        op.create_index(name, "hq_events", cols, postgresql_where=sa.text(where),
                        sqlite_where=sa.text(where))
    if op.get_bind().dialect.name == "postgresql":
        _collate("C")
    _epcs_key(["epc", "event_time", "event_id"], index=False)


def downgrade() -> None:
    _epcs_key(["event_id", "epc"], index=True)
    if op.get_bind().dialect.name == "postgresql":
        _collate("default")
    for name, cols, _where in PARTIAL:
        op.drop_index(name, "hq_events")
        op.create_index(name, "hq_events", cols)
