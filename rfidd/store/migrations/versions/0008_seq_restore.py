"""The sequence after a restore: a restored mark on the counter, and the known skips.

`rfidd restore` sets event_sequence.restored_at; the next start learns the highest number the
site ever announced and continues after it, recording the numbers it jumped over in
sequence_skips (announced to HQ with the sequence head, so HQ neither waits for them nor hides
a loss among them).

Revision ID: 0008_seq_restore
Revises: 0007_ops_exit_alerts_in_alerts
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_seq_restore"
down_revision: str | None = "0007_ops_exit_alerts_in_alerts"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("event_sequence") as b:
        b.add_column(sa.Column("restored_at", sa.Float()))
    op.create_table(
        "sequence_skips",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("used_through", sa.BigInteger()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sequence_skips"),
    )


def downgrade() -> None:
    op.drop_table("sequence_skips")
    with op.batch_alter_table("event_sequence") as b:
        b.drop_column("restored_at")
