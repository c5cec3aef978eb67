"""Store truth: holds and home zones on the lifecycle books, the alert workflow, product cost.

Revision ID: 0004_store_truth
Revises: 0003_lifecycle
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_store_truth"
down_revision: str | None = "0003_lifecycle"
branch_labels: str | None = None
depends_on: str | None = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("lifecycle_items") as b:
        b.add_column(sa.Column("hold_client", sa.String(128)))
        b.add_column(sa.Column("hold_staff", sa.String(128)))
        b.add_column(sa.Column("hold_until", Time))
        b.add_column(sa.Column("hold_for_site", sa.String(64)))
        b.add_column(sa.Column("held_from", sa.String(32)))
        b.add_column(sa.Column("home_zone", sa.String(64)))
    with op.batch_alter_table("products") as b:
        b.add_column(sa.Column("cost", sa.Numeric(12, 2)))
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64)),
        sa.Column("home_zone", sa.String(64)),
        sa.Column("raised_at", Time, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acknowledged_by", sa.String(128)),
        sa.Column("acknowledged_at", Time),
        sa.Column("acknowledged_note", sa.Text()),
        sa.Column("resolution", sa.String(32)),
        sa.Column("resolved_by", sa.String(128)),
        sa.Column("resolved_at", Time),
        sa.Column("resolved_note", sa.Text()),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_kind", "alerts", ["kind"])
    op.create_index("ix_alerts_epc", "alerts", ["epc"])
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])
    op.create_index("ix_alerts_state", "alerts", ["state"])


def downgrade() -> None:
    op.drop_table("alerts")
    with op.batch_alter_table("products") as b:
        b.drop_column("cost")
    with op.batch_alter_table("lifecycle_items") as b:
        for c in ("home_zone", "held_from", "hold_for_site", "hold_until", "hold_staff",
                  "hold_client"):
            b.drop_column(c)
