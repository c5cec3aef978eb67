"""Initial schema: products, items, zone_presence, events, outbox.

Revision ID: 0001
Revises:
Create Date: 2024-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("gtin", sa.String(14), nullable=False),
        sa.Column("sku", sa.String(64)),
        sa.Column("name", sa.String(256)),
        sa.Column("size", sa.String(32)),
        sa.Column("colour", sa.String(64)),
        sa.Column("category", sa.String(64)),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("updated", Time, nullable=False),
        sa.PrimaryKeyConstraint("gtin", name="pk_products"),
    )
    op.create_table(
        "items",
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("epc_uri", sa.String(128)),
        sa.Column("gtin", sa.String(14)),
        sa.Column("serial", sa.String(32)),
        sa.Column("zone", sa.String(64)),
        sa.Column("biz_step", sa.String(64)),
        sa.Column("disposition", sa.String(64)),
        sa.Column("first_seen", Time),
        sa.Column("last_seen", Time),
        sa.Column("updated", Time, nullable=False),
        sa.PrimaryKeyConstraint("epc", name="pk_items"),
    )
    op.create_index("ix_items_gtin", "items", ["gtin"])
    op.create_index("ix_items_zone", "items", ["zone"])
    op.create_index("ix_items_disposition", "items", ["disposition"])
    op.create_table(
        "zone_presence",
        sa.Column("epc", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("since", Time, nullable=False),
        sa.Column("last_seen", Time, nullable=False),
        sa.Column("reader", sa.String(64)),
        sa.Column("antenna", sa.Integer()),
        sa.Column("rssi_dbm", sa.Float()),
        sa.ForeignKeyConstraint(
            ["epc"], ["items.epc"], name="fk_zone_presence_epc_items", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("epc", name="pk_zone_presence"),
    )
    op.create_index("ix_zone_presence_zone", "zone_presence", ["zone"])
    op.create_table(
        "events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("event_time", Time, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16)),
        sa.Column("biz_step", sa.String(64)),
        sa.Column("disposition", sa.String(64)),
        sa.Column("zone", sa.String(64)),
        sa.Column("epc_count", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_event_time", "events", ["event_time"])
    op.create_table(
        "outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(128)),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("sent_at", Time),
        sa.Column("failed_at", Time),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index("ix_outbox_sent_at_id", "outbox", ["sent_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_sent_at_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_events_event_time", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_zone_presence_zone", table_name="zone_presence")
    op.drop_table("zone_presence")
    op.drop_index("ix_items_disposition", table_name="items")
    op.drop_index("ix_items_zone", table_name="items")
    op.drop_index("ix_items_gtin", table_name="items")
    op.drop_table("items")
    op.drop_table("products")
