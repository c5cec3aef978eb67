"""HQ events at scale: monthly partitions on PostgreSQL, a dedup table, indexes for the queries.

PostgreSQL: `hq_events` becomes `PARTITION BY RANGE (event_time)`, one partition a month
(`hq_events_pYYYYMM`). A partitioned table cannot hold a unique index without the partition
key, so eventID uniqueness moves to `hq_event_ids` (event_id primary key, with the event's time so
a lookup by id prunes to one partition). Existing rows are copied into the partitions their
eventTime falls in; the row ids (and their sequence) are kept, so `nextPageToken`s stay valid.
SQLite keeps a plain `hq_events` table, with the same dedup table (one write path).

`hq_event_epcs.listed`: the EPC is in epcList/childEPCs (what MATCH_epc looks at), not only in
parentID/inputEPCList/outputEPCList (which MATCH_anyEPC adds), so MATCH_epc filters in SQL.
The foreign key from `hq_event_epcs` to `hq_events.event_id` goes (no unique key to refer to):
both are written by the same statement.

Revision ID: hq0005_hq_partitions
Revises: hq0004_subscriptions
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "hq0005_hq_partitions"
down_revision: str | None = "hq0004_subscriptions"
branch_labels: str | None = None
depends_on: str | None = None

Time = sa.DateTime(timezone=True)
AHEAD_MONTHS = 3  # as rfidd.hq.partitions.ensure_ahead does at every start

NEW_INDEXES = (
    ("ix_hq_events_event_id", ["event_id"]),
    ("ix_hq_events_location_id", ["biz_location", "id"]),
    ("ix_hq_events_read_point_id", ["read_point", "id"]),
)
OLD_INDEXES = (
    ("ix_hq_events_site_time", ["site", "event_time"]),
    ("ix_hq_events_site_seq", ["site", "seq"]),
    ("ix_hq_events_step_time", ["biz_step", "event_time"]),
    ("ix_hq_events_received_at", ["received_at"]),
)
# ix_hq_events_site_time goes: no query reads it (the standard ones have their own indexes);
# ix_hq_events_received_at becomes (received_at, id): GE_recordTime pages in that order.
KEPT_INDEXES = (
    ("ix_hq_events_site_seq", ["site", "seq"]),
    ("ix_hq_events_step_time", ["biz_step", "event_time"]),
)
COLS = ("id, event_id, site, type, event_time, action, biz_step, disposition, read_point, "
        "biz_location, biz_transactions, raw, received_at, seq")


def _month(y: int, m: int) -> tuple[int, int]:
    return (y + (m - 1) // 12, (m - 1) % 12 + 1)


def _partition_sql(y: int, m: int) -> str:
    ny, nm = _month(y, m + 1)
    return (f"CREATE TABLE IF NOT EXISTS hq_events_p{y:04d}{m:02d} PARTITION OF hq_events "
            f"FOR VALUES FROM ('{y:04d}-{m:02d}-01 00:00:00+00') "
            f"TO ('{ny:04d}-{nm:02d}-01 00:00:00+00')")


def _listed_false_pg() -> str:
    return ("UPDATE hq_event_epcs x SET listed = false FROM hq_events e "
            "WHERE e.event_id = x.event_id AND e.event_time = x.event_time "
            "AND NOT (coalesce(e.raw->'epcList' ? x.epc, false) "
            "OR coalesce(e.raw->'childEPCs' ? x.epc, false))")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "hq_event_ids",
        sa.Column("event_id", sa.String(512), primary_key=True),
        sa.Column("event_time", Time, nullable=False),
    )
    op.add_column("hq_event_epcs", sa.Column("listed", sa.Boolean(), nullable=False,
                                             server_default=sa.true()))
    if bind.dialect.name == "postgresql":
        _upgrade_pg()
        return
    op.execute("INSERT INTO hq_event_ids (event_id, event_time) "
               "SELECT event_id, event_time FROM hq_events")
    op.execute(
        "UPDATE hq_event_epcs SET listed = 0 WHERE NOT EXISTS (SELECT 1 FROM hq_events e, "
        "json_each(e.raw, '$.epcList') j WHERE e.event_id = hq_event_epcs.event_id "
        "AND j.value = hq_event_epcs.epc) AND NOT EXISTS (SELECT 1 FROM hq_events e, "
        "json_each(e.raw, '$.childEPCs') j WHERE e.event_id = hq_event_epcs.event_id "
        "AND j.value = hq_event_epcs.epc)")
    with op.batch_alter_table("hq_event_epcs") as b:
        b.drop_constraint("fk_hq_event_epcs_event", type_="foreignkey")
    with op.batch_alter_table("hq_events") as b:
        b.drop_constraint("uq_hq_events_event_id", type_="unique")
    op.drop_index("ix_hq_events_site_time", "hq_events")
    op.drop_index("ix_hq_events_received_at", "hq_events")
    op.create_index("ix_hq_events_received_at", "hq_events", ["received_at", "id"])
    for name, cols in NEW_INDEXES:
        op.create_index(name, "hq_events", cols)


def _upgrade_pg() -> None:
    bind = op.get_bind()
    op.execute("ALTER TABLE hq_event_epcs DROP CONSTRAINT fk_hq_event_epcs_event")
    op.execute("ALTER TABLE hq_events RENAME TO hq_events_unpartitioned")
    op.execute("ALTER TABLE hq_events_unpartitioned DROP CONSTRAINT hq_events_pkey")
    op.execute("ALTER TABLE hq_events_unpartitioned DROP CONSTRAINT uq_hq_events_event_id")
    for name, _cols in OLD_INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute("ALTER TABLE hq_events_unpartitioned ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE hq_events_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE hq_events (id BIGINT NOT NULL DEFAULT nextval('hq_events_id_seq'), "
        "event_id VARCHAR(512) NOT NULL, site VARCHAR(64) NOT NULL, type VARCHAR(32) NOT NULL, "
        "event_time TIMESTAMP WITH TIME ZONE NOT NULL, action VARCHAR(16), "
        "biz_step VARCHAR(256), disposition VARCHAR(256), read_point VARCHAR(512), "
        "biz_location VARCHAR(512), biz_transactions JSONB, raw JSONB NOT NULL, "
        "received_at TIMESTAMP WITH TIME ZONE NOT NULL, seq BIGINT, "
        "CONSTRAINT hq_events_pkey PRIMARY KEY (id, event_time)) "
        "PARTITION BY RANGE (event_time)")
    op.execute("ALTER SEQUENCE hq_events_id_seq OWNED BY hq_events.id")
    months = {(int(y), int(m)) for y, m in bind.execute(sa.text(
        "SELECT DISTINCT extract(year FROM event_time AT TIME ZONE 'UTC'), "
        "extract(month FROM event_time AT TIME ZONE 'UTC') FROM hq_events_unpartitioned"))}
    now = datetime.now(UTC)
    months |= {_month(now.year, now.month + k) for k in range(AHEAD_MONTHS + 1)}
    for y, m in sorted(months):
        op.execute(_partition_sql(y, m))
    op.execute(f"INSERT INTO hq_events ({COLS}) SELECT {COLS} FROM hq_events_unpartitioned")
    op.execute("INSERT INTO hq_event_ids (event_id, event_time) "
               "SELECT event_id, event_time FROM hq_events_unpartitioned")
    op.execute("DROP TABLE hq_events_unpartitioned")
    for name, cols in KEPT_INDEXES + NEW_INDEXES:  # built after the copy: one sort each
        op.create_index(name, "hq_events", cols)
    op.create_index("ix_hq_events_received_at", "hq_events", ["received_at", "id"])
    op.execute(_listed_false_pg())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE hq_events RENAME TO hq_events_partitioned")
        for name, _cols in KEPT_INDEXES + NEW_INDEXES:
            op.execute(f"DROP INDEX {name}")
        op.execute("DROP INDEX ix_hq_events_received_at")
        op.execute("ALTER TABLE hq_events_partitioned DROP CONSTRAINT hq_events_pkey")
        op.execute("ALTER SEQUENCE hq_events_id_seq OWNED BY NONE")
        op.execute(
            "CREATE TABLE hq_events (id BIGINT NOT NULL DEFAULT nextval('hq_events_id_seq') "
            "PRIMARY KEY, event_id VARCHAR(512) NOT NULL, site VARCHAR(64) NOT NULL, "
            "type VARCHAR(32) NOT NULL, event_time TIMESTAMP WITH TIME ZONE NOT NULL, "
            "action VARCHAR(16), biz_step VARCHAR(256), disposition VARCHAR(256), "
            "read_point VARCHAR(512), biz_location VARCHAR(512), biz_transactions JSONB, "
            "raw JSONB NOT NULL, received_at TIMESTAMP WITH TIME ZONE NOT NULL, seq BIGINT, "
            "CONSTRAINT uq_hq_events_event_id UNIQUE (event_id))")
        op.execute("ALTER SEQUENCE hq_events_id_seq OWNED BY hq_events.id")
        op.execute(f"INSERT INTO hq_events ({COLS}) SELECT {COLS} FROM hq_events_partitioned")
        op.execute("DROP TABLE hq_events_partitioned")  # its partitions go with it
        for name, cols in OLD_INDEXES:
            op.create_index(name, "hq_events", cols)
    else:
        for name, _cols in NEW_INDEXES:
            op.drop_index(name, "hq_events")
        op.create_index("ix_hq_events_site_time", "hq_events", ["site", "event_time"])
        op.drop_index("ix_hq_events_received_at", "hq_events")
        op.create_index("ix_hq_events_received_at", "hq_events", ["received_at"])
        with op.batch_alter_table("hq_events") as b:
            b.create_unique_constraint("uq_hq_events_event_id", ["event_id"])
    with op.batch_alter_table("hq_event_epcs") as b:
        b.drop_column("listed")
        b.create_foreign_key("fk_hq_event_epcs_event", "hq_events", ["event_id"],
                             ["event_id"], ondelete="CASCADE")
    op.drop_table("hq_event_ids")
