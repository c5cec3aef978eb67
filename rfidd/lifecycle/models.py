"""Tables of the lifecycle service (site database, same `Base` as rfidd/store/models.py).

`items.biz_step`/`items.disposition` stay the coarse, shared truth every service reads; these
tables hold what the state machine needs beyond it (sale receipt, loan due date, where an item
in transit goes, what a repair resumes to) and what makes commands idempotent.
"""

from __future__ import annotations

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from rfidd.store.models import Base, BigId, Time


class LifecycleItem(Base):
    """`inventory.lifecycle.ItemState` of one item as this site knows it."""

    __tablename__ = "lifecycle_items"

    epc: Mapped[str] = mapped_column(String(64), primary_key=True)  # upper-case hex
    status: Mapped[str] = mapped_column(String(32), index=True)
    disposition: Mapped[str] = mapped_column(String(64))
    site: Mapped[str | None] = mapped_column(String(64))
    since: Mapped[float] = mapped_column(Time)
    biz_step: Mapped[str | None] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(64))
    shipment: Mapped[str | None] = mapped_column(String(256))
    sale_txn: Mapped[str | None] = mapped_column(String(256))
    loan_due: Mapped[float | None] = mapped_column(Time)
    after_repair: Mapped[str | None] = mapped_column(String(32))
    counted_at: Mapped[float | None] = mapped_column(Time)
    tid: Mapped[str | None] = mapped_column(String(128))
    updated: Mapped[float] = mapped_column(Time)
    hold_client: Mapped[str | None] = mapped_column(String(128))
    hold_staff: Mapped[str | None] = mapped_column(String(128))
    hold_until: Mapped[float | None] = mapped_column(Time)
    hold_for_site: Mapped[str | None] = mapped_column(String(64))
    held_from: Mapped[str | None] = mapped_column(String(32))
    home_zone: Mapped[str | None] = mapped_column(String(64))  # last stock/floor zone

    __table_args__ = (Index("ix_lifecycle_items_status_loan_due", "status", "loan_due"),)


class LifecycleApplied(Base):
    """One transition applied on behalf of a business transaction: a repeated command with
    the same (epc, step, txn) is recognised and answered as a duplicate."""

    __tablename__ = "lifecycle_applied"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    epc: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(32))
    txn: Mapped[str] = mapped_column(String(256))
    event_id: Mapped[str] = mapped_column(String(128))
    applied_at: Mapped[float] = mapped_column(Time)

    __table_args__ = (
        UniqueConstraint("epc", "step", "txn"),
        Index("ix_lifecycle_applied_step_txn", "step", "txn"),
    )


class CommissioningSession(Base):
    """A workshop batch: tags of `gtin` read at a bench are commissioned up to `expected`."""

    __tablename__ = "lifecycle_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gtin: Mapped[str | None] = mapped_column(String(14))
    expected: Mapped[int] = mapped_column(Integer)
    commissioned: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[float] = mapped_column(Time)
    closed_at: Mapped[float | None] = mapped_column(Time)


class CommissioningBind(Base):
    """One tag announced for commissioning (per-item bind), with its TID when known."""

    __tablename__ = "lifecycle_binds"

    epc: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    tid: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Time)
    used_at: Mapped[float | None] = mapped_column(Time)


class AlertRecord(Base):
    """An alert and its workflow (inventory.alerts): open -> acknowledged -> resolved."""

    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    epc: Mapped[str] = mapped_column(String(64), index=True)
    zone: Mapped[str | None] = mapped_column(String(64))
    home_zone: Mapped[str | None] = mapped_column(String(64))
    raised_at: Mapped[float] = mapped_column(Time, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    acknowledged_at: Mapped[float | None] = mapped_column(Time)
    acknowledged_note: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(String(32))
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[float | None] = mapped_column(Time)
    resolved_note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: what the alert said
