"""Item lifecycle: per-item state, applied transactions, commissioning sessions and binds.

Revision ID: 0003_lifecycle
Revises: 0002_ops
Create Date: 2024-06-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_lifecycle"
down_revision: str | None = "0002_ops"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "lifecycle_items",
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("disposition", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64)),
        sa.Column("since", Time, nullable=False),
        sa.Column("biz_step", sa.String(64)),
        sa.Column("destination", sa.String(64)),
        sa.Column("shipment", sa.String(256)),
        sa.Column("sale_txn", sa.String(256)),
        sa.Column("loan_due", Time),
        sa.Column("after_repair", sa.String(32)),
        sa.Column("counted_at", Time),
        sa.Column("tid", sa.String(128)),
        sa.Column("updated", Time, nullable=False),
        sa.PrimaryKeyConstraint("epc", name="pk_lifecycle_items"),
    )
    op.create_index("ix_lifecycle_items_status", "lifecycle_items", ["status"])
    op.create_index(
        "ix_lifecycle_items_status_loan_due", "lifecycle_items", ["status", "loan_due"]
    )
    op.create_table(
        "lifecycle_applied",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("txn", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("applied_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lifecycle_applied"),
        sa.UniqueConstraint("epc", "step", "txn", name="uq_lifecycle_applied_epc_step_txn"),
    )
    op.create_index("ix_lifecycle_applied_step_txn", "lifecycle_applied", ["step", "txn"])
    op.create_table(
        "lifecycle_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("gtin", sa.String(14)),
        sa.Column("expected", sa.Integer(), nullable=False),
        sa.Column("commissioned", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(64)),
        sa.Column("opened_at", Time, nullable=False),
        sa.Column("closed_at", Time),
        sa.PrimaryKeyConstraint("id", name="pk_lifecycle_sessions"),
    )
    op.create_table(
        "lifecycle_binds",
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("tid", sa.String(128)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("used_at", Time),
        sa.PrimaryKeyConstraint("epc", name="pk_lifecycle_binds"),
    )
    op.create_index("ix_lifecycle_binds_session_id", "lifecycle_binds", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_lifecycle_binds_session_id", table_name="lifecycle_binds")
    op.drop_table("lifecycle_binds")
    op.drop_table("lifecycle_sessions")
    op.drop_index("ix_lifecycle_applied_step_txn", table_name="lifecycle_applied")
    op.drop_table("lifecycle_applied")
    op.drop_index("ix_lifecycle_items_status_loan_due", table_name="lifecycle_items")
    op.drop_index("ix_lifecycle_items_status", table_name="lifecycle_items")
    op.drop_table("lifecycle_items")
