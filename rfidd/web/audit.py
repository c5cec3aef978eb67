"""The audit log: every authenticated write through the API, kept in the site database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from rfidd.store.db import Database
from rfidd.store.models import AuditRecord
from rfidd.web.security import AuditEntry


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, e: AuditEntry) -> None:
        with self.db.write() as s:
            s.add(AuditRecord(at=e.at, actor_kind=e.actor_kind, actor=e.actor[:64],
                              address=e.address[:64], method=e.method, path=e.path[:512],
                              status=e.status, detail=e.detail))

    def since(self, since: float, limit: int = 1000) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(select(AuditRecord).where(AuditRecord.at >= since)
                             .order_by(AuditRecord.id).limit(limit)).all()
            return [{"id": r.id, "at": r.at, "actor_kind": r.actor_kind, "actor": r.actor,
                     "address": r.address, "method": r.method, "path": r.path,
                     "status": r.status, "detail": r.detail} for r in rows]
