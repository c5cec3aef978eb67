"""The write half of an ingest batch: every plan into one transaction, then applied to memory.

`BatchWriter.commit` writes the ingest's own rows (presence, the site rules' events) and each
component's plan in its own savepoint; only after the commit does `apply` let the components
update their memory. A failure is sorted by whose it is:

- the database's (it is down, full, read-only, cut off, corrupt: any DB-API error but those of
  a statement's own data or SQL) rolls the whole transaction back; the ingest retries the batch
  with the same plans (rfidd.health.retry_database), so nothing is lost or applied twice;
- a component's statements (IntegrityError, DataError, ProgrammingError, NotSupportedError):
  its savepoint is rolled back and written once more in the same transaction (on PostgreSQL a
  row another writer committed meanwhile is then seen); failing again, it is permanent: that
  component's part is left out (its events, messages and rows, all or nothing, and its apply),
  counted by component and error in `rfidd_ingest_component_write_failures_total`, logged
  with the error; the batch's reads, the site's events and the other components commit;
- a component's bug (any other exception): its part is left out, counted and logged likewise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)

from inventory.events import ItemEvent
from rfidd.metrics import Metrics
from rfidd.pipeline import BatchPlan
from rfidd.store import repo
from rfidd.store.db import Database

log = logging.getLogger("rfidd.ingest")

EventEncoder = Callable[[ItemEvent], dict[str, object]]

_STATEMENT_ERRORS = (IntegrityError, DataError, ProgrammingError, NotSupportedError)


def database_fault(exc: DBAPIError) -> bool:
    """Whether a DB-API error is the database's (retry the batch), not the statement's own."""
    return not isinstance(exc, _STATEMENT_ERRORS) or "closed" in str(exc.orig).lower()


@dataclass(slots=True)
class Staged:
    """A component's plan with its events encoded once (a retried commit reuses them)."""

    name: str
    plan: BatchPlan
    records: list[repo.EventRecord]
    skipped: bool = False

    def writes(self) -> bool:
        p = self.plan
        return bool(self.records or p.messages or p.upserts or p.write is not None)


@dataclass(slots=True)
class Base:
    """The ingest's own part of a batch: item and presence rows as tuples in the column order
    of rfidd.store.hot (items without their `updated`, the commit's time), the departed EPCs
    and the site rules' events."""

    items: list[tuple[Any, ...]] = field(default_factory=list)
    presence: list[tuple[Any, ...]] = field(default_factory=list)
    departed: list[str] = field(default_factory=list)
    events: list[ItemEvent] = field(default_factory=list)
    records: list[repo.EventRecord] = field(default_factory=list)


class BatchWriter:
    """Commits the plans of a batch (see the module doc); `on_failure` counts a component's
    failure (the ingest's stats)."""

    statement_attempts = 2
    """Writes of a component's savepoint that fails on its own statements, in one commit."""

    def __init__(self, database: Database, metrics: Metrics, encode: EventEncoder,
                 on_failure: Callable[[], None]) -> None:
        self.db = database
        self.metrics = metrics
        self.encode = encode
        self.on_failure = on_failure

    def stage(self, name: str, plan: BatchPlan | None) -> Staged | None:
        if not plan:
            return None
        return Staged(name, plan, [repo.event_record(e, self.encode(e)) for e in plan.events])

    def commit(self, base: Base, staged: list[Staged]) -> set[str]:
        """Every plan in one transaction; returns the ids of events the journal already had.
        Raises DBAPIError for the database's own failures (the caller retries)."""
        for x in staged:
            x.skipped = False
        with self.db.write() as s:
            now = time.time()
            res = repo.apply_batch(s, (), base.records, departed=base.departed, now=now,
                                   item_rows=[(*r, now) for r in base.items],
                                   presence_rows=base.presence)
            dup = set(res.duplicate_events)
            for x in staged:
                if not x.writes():  # an apply-only plan: no savepoint to pay for
                    continue
                for attempt in range(1, self.statement_attempts + 1):
                    try:
                        with s.begin_nested():
                            r = repo.apply_batch(s, x.plan.upserts, x.records,
                                                 x.plan.messages, now=now)
                            if x.plan.write is not None:
                                x.plan.write(s)
                        dup.update(r.duplicate_events)
                        break
                    except DBAPIError as exc:
                        if database_fault(exc):
                            raise  # the database itself: retry the whole batch
                        if attempt < self.statement_attempts:
                            log.warning("ingest: component %s's write failed (%s); writing "
                                        "it once more", x.name, _error(exc))
                            continue
                        x.skipped = True
                        self.failed(x.name, "write", len(x.plan.events), _error(exc))
                    except Exception:
                        x.skipped = True
                        self.failed(x.name, "write", len(x.plan.events), "bug")
                        break
        return dup

    def apply(self, staged: list[Staged]) -> None:
        """After the commit: each component's memory, once (not for a part left out)."""
        for x in staged:
            if x.skipped or x.plan.apply is None:
                continue
            try:
                x.plan.apply()
            except Exception:
                self.failed(x.name, "apply", len(x.plan.events), "bug")

    def failed(self, name: str, phase: str, n: int, error: str) -> None:
        self.on_failure()
        self.metrics.component_errors.labels(name).inc()
        if phase == "write":
            self.metrics.component_write_failures.labels(name, error).inc()
        log.exception("ingest: component %s failed to %s its part of a batch (%d events, "
                      "left out: %s); the rest of the batch goes on", name, phase, n, error)


def _error(exc: DBAPIError) -> str:
    """The driver's exception class (e.g. UniqueViolation, IntegrityError): the metric's label."""
    return type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
