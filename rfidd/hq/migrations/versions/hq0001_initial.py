"""HQ initial schema: hq_events, hq_event_epcs, hq_sites, hq_site_messages.

Revision ID: hq0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "hq0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hq_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(512), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("event_time", Time, nullable=False),
        sa.Column("action", sa.String(16)),
        sa.Column("biz_step", sa.String(256)),
        sa.Column("disposition", sa.String(256)),
        sa.Column("read_point", sa.String(512)),
        sa.Column("biz_location", sa.String(512)),
        sa.Column("biz_transactions", Json),
        sa.Column("raw", Json, nullable=False),
        sa.Column("received_at", Time, nullable=False),
        sa.UniqueConstraint("event_id", name="uq_hq_events_event_id"),
    )
    op.create_index("ix_hq_events_site_time", "hq_events", ["site", "event_time"])
    op.create_table(
        "hq_event_epcs",
        sa.Column("event_id", sa.String(512), primary_key=True),
        sa.Column("epc", sa.String(512), primary_key=True),
        sa.Column("event_time", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["hq_events.event_id"], ondelete="CASCADE",
            name="fk_hq_event_epcs_event",
        ),
    )
    op.create_index("ix_hq_event_epcs_epc_time", "hq_event_epcs", ["epc", "event_time"])
    op.create_table(
        "hq_sites",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16)),
        sa.Column("status_at", Time),
        sa.Column("last_seen", Time),
    )
    op.create_table(
        "hq_site_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("received_at", Time, nullable=False),
        sa.UniqueConstraint("site", "kind", "digest", name="uq_hq_site_messages_digest"),
    )
    op.create_index(
        "ix_hq_site_messages_site_time", "hq_site_messages", ["site", "received_at"]
    )


def downgrade() -> None:
    op.drop_table("hq_site_messages")
    op.drop_table("hq_sites")
    op.drop_index("ix_hq_event_epcs_epc_time", "hq_event_epcs")
    op.drop_table("hq_event_epcs")
    op.drop_index("ix_hq_events_site_time", "hq_events")
    op.drop_table("hq_events")
