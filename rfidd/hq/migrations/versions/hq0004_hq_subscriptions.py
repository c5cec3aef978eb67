"""Query subscriptions of the EPCIS interface (webhooks: destination, signing secret,
stream or schedule, owner, last notification); capture jobs' error behaviour and errors.

Revision ID: hq0004_subscriptions
Revises: hq0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "hq0004_subscriptions"
down_revision: str | None = "hq0003"
branch_labels: str | None = None
depends_on: str | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hq_subscriptions",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("query_name", sa.String(128), nullable=False),
        sa.Column("dest", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(512)),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("schedule", Json),
        sa.Column("report_if_empty", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("last_notified_at", Time),
        sa.Column("cursor_at", Time),
    )
    op.create_index("ix_hq_subscriptions_query", "hq_subscriptions", ["query_name"])
    # A capture job's GS1-Capture-Error-Behaviour and its errors (proceed: the events left out).
    op.create_table(
        "hq_capture_outcomes",
        sa.Column("capture_id", sa.String(64), primary_key=True),
        sa.Column("behaviour", sa.String(16), nullable=False),
        sa.Column("errors", Json, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hq_capture_outcomes")
    op.drop_index("ix_hq_subscriptions_query", "hq_subscriptions")
    op.drop_table("hq_subscriptions")
