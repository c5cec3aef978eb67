"""Per-site gap-free event sequence numbers: events.seq, outbox.seq, the counter row.

HQ counts on every journaled event having one number, 1, 2, 3... with no hole, so it can
tell a lost message from a quiet site. Existing events are numbered in journal (id) order.

Revision ID: 0006_event_seq
Revises: 0005_audit
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_event_seq"
down_revision: str | None = "0005_audit"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as b:
        b.add_column(sa.Column("seq", sa.BigInteger()))
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("seq", sa.BigInteger()))
    op.execute(
        "UPDATE events SET seq = n.rn FROM "
        "(SELECT id, row_number() OVER (ORDER BY id) AS rn FROM events) AS n "
        "WHERE events.id = n.id"
    )
    op.execute(
        "UPDATE outbox SET seq = events.seq FROM events "
        "WHERE outbox.event_id = events.event_id AND outbox.stream = 'epcis'"
    )
    op.create_index("ix_events_seq", "events", ["seq"], unique=True)
    op.create_index("ix_outbox_seq", "outbox", ["seq"])
    op.create_table(
        "event_sequence",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_sequence"),
    )
    op.execute("INSERT INTO event_sequence (id, last_seq) "
               "SELECT 1, COALESCE(MAX(seq), 0) FROM events")


def downgrade() -> None:
    op.drop_table("event_sequence")
    op.drop_index("ix_outbox_seq", "outbox")
    op.drop_index("ix_events_seq", "events")
    with op.batch_alter_table("outbox") as b:
        b.drop_column("seq")
    with op.batch_alter_table("events") as b:
        b.drop_column("seq")
