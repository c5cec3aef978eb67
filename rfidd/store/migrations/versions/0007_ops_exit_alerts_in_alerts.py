"""Exit alerts are kept once, in the alert workflow's `alerts` table (kind `exit_unsold`).

Since 0004 every exit alert was written twice, in `ops_exit_alerts` (for the shrinkage report)
and in `alerts` (the workflow), with the same id, epc, zone and time. Rows only the old table
has (alerts raised before 0004) move into `alerts` as open, unresolved, with a note in
`detail` saying where they come from; then the old table goes.

Revision ID: 0007_ops_exit_alerts_in_alerts
Revises: 0006_event_seq
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_ops_exit_alerts_in_alerts"
down_revision: str | None = "0006_event_seq"
branch_labels: str | None = None
depends_on: str | None = None

Time = sa.Float(precision=53)
MIGRATED = '{"migrated_from": "ops_exit_alerts"}'


def upgrade() -> None:
    op.execute(sa.text(
        "INSERT INTO alerts (alert_id, kind, epc, zone, raised_at, state, detail) "
        "SELECT o.alert_id, 'exit_unsold', o.epc, o.zone, o.at, 'open', :detail "
        "FROM ops_exit_alerts o "
        "WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.alert_id = o.alert_id)"
    ).bindparams(detail=MIGRATED))
    op.drop_index("ix_ops_exit_alerts_at", table_name="ops_exit_alerts")
    op.drop_index("ix_ops_exit_alerts_epc", table_name="ops_exit_alerts")
    op.drop_table("ops_exit_alerts")


def downgrade() -> None:
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
    op.execute(
        "INSERT INTO ops_exit_alerts (alert_id, epc, zone, at) "
        "SELECT alert_id, epc, coalesce(zone, ''), raised_at FROM alerts "
        "WHERE kind = 'exit_unsold'"
    )
