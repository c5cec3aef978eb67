"""Tables of store operations: ASNs, reception and count sessions, exit alerts, schedules, state.

They live on the site database's `Base` (same metadata, same migrations directory) but in their
own module, so the core schema stays readable. Reports are stored as the JSON documents sent to
HQ: what staff see later is exactly what HQ received.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from rfidd.store.models import Base, BigId, Time


class OpsAsn(Base):
    """An imported shipping notice; `content_hash` makes re-imports idempotent."""

    __tablename__ = "ops_asns"

    asn_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(128))
    destination: Mapped[str] = mapped_column(String(128))
    shipped_at: Mapped[float] = mapped_column(Time)
    expected_items: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)  # Asn.to_dict() as JSON
    source: Mapped[str | None] = mapped_column(String(256))
    imported_at: Mapped[float] = mapped_column(Time)
    session_id: Mapped[str | None] = mapped_column(String(64))  # reception that used it


class OpsReceptionSession(Base):
    __tablename__ = "ops_reception_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | closed
    asn_ids: Mapped[str] = mapped_column(Text)  # JSON list
    opened_by: Mapped[str] = mapped_column(String(32))  # staff | asn
    opened_at: Mapped[float] = mapped_column(Time)
    closed_at: Mapped[float | None] = mapped_column(Time)
    totals: Mapped[str | None] = mapped_column(Text)  # JSON
    report: Mapped[str | None] = mapped_column(Text)  # JSON document published to HQ


class OpsCountSession(Base):
    __tablename__ = "ops_count_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running | finished | aborted
    zones: Mapped[str] = mapped_column(Text)  # JSON list
    trigger: Mapped[str] = mapped_column(String(32))  # staff | schedule
    started_at: Mapped[float] = mapped_column(Time)
    finished_at: Mapped[float | None] = mapped_column(Time)
    expected: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float | None] = mapped_column(Float)  # per-record accuracy
    totals: Mapped[str | None] = mapped_column(Text)  # JSON
    report: Mapped[str | None] = mapped_column(Text)  # JSON document published to HQ


class OpsCountSchedule(Base):
    __tablename__ = "ops_count_schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    cron: Mapped[str] = mapped_column(String(128))  # crontab: minute hour day month dow
    zones: Mapped[str] = mapped_column(Text)  # JSON list
    duration_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Time)


class OpsState(Base):
    """Small JSON state blobs kept across restarts (the loss tracker's consecutive misses)."""

    __tablename__ = "ops_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated: Mapped[float] = mapped_column(Time)


__all__ = [
    "OpsAsn",
    "OpsCountSchedule",
    "OpsCountSession",
    "OpsReceptionSession",
    "OpsState",
]
