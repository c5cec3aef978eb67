"""Per-site sequence tracking and the site registry.

hq_events.seq: the site's gap-free number of the event (none for events captured from
elsewhere). hq_sites: the registry (registered_at, name), the site's announced head
(published_through), how far HQ holds every event (contiguous_seq), since when a gap is open.

Revision ID: hq0002
Revises: hq0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "hq0002"
down_revision: str | None = "hq0001"
branch_labels: str | None = None
depends_on: str | None = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("hq_events") as b:
        b.add_column(sa.Column("seq", sa.BigInteger()))
    op.create_index("ix_hq_events_site_seq", "hq_events", ["site", "seq"])
    with op.batch_alter_table("hq_sites") as b:
        b.add_column(sa.Column("name", sa.String(256)))
        b.add_column(sa.Column("registered_at", Time))
        b.add_column(sa.Column("published_through", sa.BigInteger()))
        b.add_column(sa.Column("contiguous_seq", sa.BigInteger(), nullable=False,
                               server_default="0"))
        b.add_column(sa.Column("gap_since", Time))
        b.add_column(sa.Column("rejected", sa.BigInteger(), nullable=False,
                               server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("hq_sites") as b:
        for c in ("rejected", "gap_since", "contiguous_seq", "published_through",
                  "registered_at", "name"):
            b.drop_column(c)
    op.drop_index("ix_hq_events_site_seq", "hq_events")
    with op.batch_alter_table("hq_events") as b:
        b.drop_column("seq")
