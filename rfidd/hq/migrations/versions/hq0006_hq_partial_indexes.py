"""Partial indexes on `hq_events` for the columns a query only ever compares for equality (or
a range) and many events leave empty: an event without a value costs no index entry.

`ix_hq_events_site_seq` serves the sequence walk (`seq > n`) and holds only events with a
site sequence number (captured events have none); `ix_hq_events_location_id` serves
EQ_bizLocation and holds only events with a bizLocation (EQ_ never matches a missing one).
Both predicates are implied by the queries' own conditions (a strict comparison implies NOT
NULL), so PostgreSQL and SQLite still pick them. Measured: about a tenth of the index work of
a batch of events without seq or bizLocation (the benchmark's); none for site events, which
have both.

Revision ID: hq0006_hq_partial_indexes
Revises: hq0005_hq_partitions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "hq0006_hq_partial_indexes"
down_revision: str | None = "hq0005_hq_partitions"
branch_labels: str | None = None
depends_on: str | None = None

PARTIAL = (
    ("ix_hq_events_site_seq", ["site", "seq"], "seq IS NOT NULL"),
    ("ix_hq_events_location_id", ["biz_location", "id"], "biz_location IS NOT NULL"),
)


def upgrade() -> None:
    for name, cols, where in PARTIAL:
        op.drop_index(name, "hq_events")
        op.create_index(name, "hq_events", cols, postgresql_where=sa.text(where),
                        sqlite_where=sa.text(where))


def downgrade() -> None:
    for name, cols, _where in PARTIAL:
        op.drop_index(name, "hq_events")
        op.create_index(name, "hq_events", cols)
