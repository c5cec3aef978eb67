"""The EPCIS 2.0 REST interface: integrator tokens (hashed), named queries, capture jobs;
the chain's product catalog (master data HQ publishes to the stores).

Revision ID: hq0003
Revises: hq0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "hq0003"
down_revision: str | None = "hq0002"
branch_labels: str | None = None
depends_on: str | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hq_tokens",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.UniqueConstraint("digest", name="uq_hq_tokens_digest"),
    )
    op.create_table(
        "hq_queries",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("query", Json, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "hq_captures",
        sa.Column("capture_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
    )


    op.create_table(
        "hq_products",
        sa.Column("gtin", sa.String(14), primary_key=True),
        sa.Column("sku", sa.String(64)),
        sa.Column("name", sa.String(256)),
        sa.Column("size", sa.String(32)),
        sa.Column("colour", sa.String(64)),
        sa.Column("category", sa.String(64)),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("updated", Time, nullable=False),
    )
    op.create_index("ix_hq_products_sku", "hq_products", ["sku"])
    # The standard queries: by bizStep in an eventTime window, by recordTime.
    op.create_index("ix_hq_events_step_time", "hq_events", ["biz_step", "event_time"])
    op.create_index("ix_hq_events_received_at", "hq_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_hq_events_received_at", "hq_events")
    op.drop_index("ix_hq_events_step_time", "hq_events")
    op.drop_table("hq_products")
    op.drop_table("hq_captures")
    op.drop_table("hq_queries")
    op.drop_table("hq_tokens")
