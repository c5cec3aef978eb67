"""Store operations: ASNs, reception and count sessions, exit alerts, count schedules, state.

Revision ID: 0002_ops
Revises: 0001
Create Date: 2024-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_ops"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "ops_asns",
        sa.Column("asn_id", sa.String(128), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(128), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("shipped_at", Time, nullable=False),
        sa.Column("expected_items", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("source", sa.String(256)),
        sa.Column("imported_at", Time, nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.PrimaryKeyConstraint("asn_id", name="pk_ops_asns"),
    )
    op.create_table(
        "ops_reception_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("asn_ids", sa.Text(), nullable=False),
        sa.Column("opened_by", sa.String(32), nullable=False),
        sa.Column("opened_at", Time, nullable=False),
        sa.Column("closed_at", Time),
        sa.Column("totals", sa.Text()),
        sa.Column("report", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_ops_reception_sessions"),
    )
    op.create_index("ix_ops_reception_sessions_status", "ops_reception_sessions", ["status"])
    op.create_table(
        "ops_count_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("zones", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("finished_at", Time),
        sa.Column("expected", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float()),
        sa.Column("totals", sa.Text()),
        sa.Column("report", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_ops_count_sessions"),
    )
    op.create_index("ix_ops_count_sessions_status", "ops_count_sessions", ["status"])
    op.create_table(
        "ops_exit_alerts",
        sa.Column("alert_id", sa.String(128), nullable=False),
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name="pk_ops_exit_alerts"),
    )
    op.create_index("ix_ops_exit_alerts_epc", "ops_exit_alerts", ["epc"])
    op.create_index("ix_ops_exit_alerts_at", "ops_exit_alerts", ["at"])
    op.create_table(
        "ops_count_schedules",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("zones", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ops_count_schedules"),
    )
    op.create_table(
        "ops_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated", Time, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_ops_state"),
    )


def downgrade() -> None:
    op.drop_table("ops_state")
    op.drop_table("ops_count_schedules")
    op.drop_index("ix_ops_exit_alerts_at", table_name="ops_exit_alerts")
    op.drop_index("ix_ops_exit_alerts_epc", table_name="ops_exit_alerts")
    op.drop_table("ops_exit_alerts")
    op.drop_index("ix_ops_count_sessions_status", table_name="ops_count_sessions")
    op.drop_table("ops_count_sessions")
    op.drop_index("ix_ops_reception_sessions_status", table_name="ops_reception_sessions")
    op.drop_table("ops_reception_sessions")
    op.drop_table("ops_asns")
