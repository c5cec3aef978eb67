"""A component's write failing inside the batch's transaction, sorted by whose fault it is: the
database's (read-only, cut off) retries the whole batch with the same plans; the component's
own statements are written once more, then left out (counted by component and error) while the
batch's reads, the site's events and the other components commit."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from fakes import make_ingestor
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InternalError
from sqlalchemy.orm import Session

from inventory.epc import sgtin96_hex
from readers.base import TagRead
from rfidd.ingest import Ingestor
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store import repo
from rfidd.store.db import open_database
from rfidd.store.models import OutboxMessage, ZonePresence

pytestmark = pytest.mark.integration

EPC = sgtin96_hex("03760001001013", 1, 7)
GHOST = sgtin96_hex("03760001001013", 999, 7)  # never read: no items row


class Component:
    """Plans one alert per batch; its write runs `fail(attempt)` first."""

    watched_zones: frozenset[str] = frozenset()

    def __init__(self, name: str, fail: Any) -> None:
        self.name = name
        self.fail = fail
        self.writes = 0
        self.applied: list[str] = []

    def plan(self, view: BatchView) -> BatchPlan:
        alert_id = f"{self.name}-{view.changes[0].epc}"

        def write(s: Session) -> None:
            self.writes += 1
            self.fail(s, self.writes)

        return BatchPlan(messages=[repo.Message("alert", "alerts", {"id": alert_id},
                                                event_id=alert_id)],
                         write=write, apply=lambda: self.applied.append(alert_id))


def _ingestor(url: str, *components: Component) -> Ingestor:
    ing, _ = make_ingestor(open_database(url), {("r1", 1): "floor"}, {"floor": "floor"})
    for c in components:
        ing.add_component(c)
    return ing


def _outbox(ing: Ingestor) -> list[tuple[str, str | None]]:
    with ing.db.session() as s:
        return sorted((r.stream, r.event_id) for r in s.query(OutboxMessage))


def _read(ing: Ingestor) -> None:
    ing.process([("r1", [TagRead(EPC, "r1", 1, -50.0, 1000.0)])])


def test_a_read_only_database_under_a_component_retries_the_batch(sqlite_url: str) -> None:
    """A non-Operational DB-API error that is the database's (PostgreSQL's read-only
    transaction after a fail-over is an InternalError) was skipped as the component's: its
    alert was lost while the batch committed. Now the batch is retried with the same plans."""

    def read_only(_s: Session, attempt: int) -> None:
        if attempt <= 2:
            raise InternalError("INSERT ...", {}, sqlite3.InternalError(
                "cannot execute INSERT in a read-only transaction"))

    comp = Component("books", read_only)
    ing = _ingestor(sqlite_url, comp)
    _read(ing)
    rows = _outbox(ing)
    assert [st for st, _ in rows] == ["alert", "epcis"] and rows[0][1] == f"books-{EPC}"
    assert comp.applied == [f"books-{EPC}"] and comp.writes == 3
    assert ing.stats.db_errors == 2 and ing.stats.hook_errors == 0
    assert ing.stats.commits == 1 and ing.stats.committed_reads == 1


def test_a_statement_error_once_is_written_again_in_the_same_commit(sqlite_url: str) -> None:
    """A unique violation against a row another writer just committed (PostgreSQL, read
    committed): the second write in a fresh savepoint sees it and goes through."""

    def race(_s: Session, attempt: int) -> None:
        if attempt == 1:
            raise IntegrityError("INSERT ...", {}, sqlite3.IntegrityError(
                "UNIQUE constraint failed: shipments.id"))

    comp = Component("reception", race)
    ing = _ingestor(sqlite_url, comp)
    _read(ing)
    assert ("alert", f"reception-{EPC}") in _outbox(ing)
    assert comp.applied == [f"reception-{EPC}"] and comp.writes == 2
    assert ing.stats.db_errors == 0 and ing.stats.hook_errors == 0
    value = ing.metrics.registry.get_sample_value
    assert value("rfidd_ingest_component_errors_total", {"component": "reception"}) == 0


def test_a_permanent_statement_error_leaves_out_that_component_only(db_url: str) -> None:
    """A real foreign-key violation, on both databases: that component's part (its alert, its
    rows, its apply) is left out, counted by component and the driver's error; the read, its
    presence, the site's arrival event and the other component's part are committed."""

    def dangling(s: Session, _attempt: int) -> None:  # presence for an item never stored
        repo.upsert_presence(s, [repo.PresenceRow(GHOST, "floor", 1.0, 1.0)])

    broken = Component("broken", dangling)
    good = Component("good", lambda _s, _a: None)
    ing = _ingestor(db_url, broken, good)
    _read(ing)
    rows = _outbox(ing)
    assert [r for r in rows if r[0] == "alert"] == [("alert", f"good-{EPC}")]
    assert [st for st, _ in rows].count("epcis") == 1  # the site's arrival event
    assert broken.writes == 2 and broken.applied == []
    assert good.applied == [f"good-{EPC}"]
    with ing.db.session() as s:
        assert s.get(ZonePresence, EPC) is not None and s.get(ZonePresence, GHOST) is None
        assert s.execute(text("SELECT count(*) FROM items WHERE epc = :e"),
                         {"e": EPC}).scalar() == 1
    assert ing.stats.committed_reads == 1 and ing.stats.hook_errors == 1
    assert ing.stats.db_errors == 0
    failures = {s.labels["error"]: s.value for m in ing.metrics.registry.collect()
                if m.name == "rfidd_ingest_component_write_failures" for s in m.samples
                if s.name.endswith("_total") and s.labels["component"] == "broken"}
    expected = "IntegrityError" if db_url.startswith("sqlite") else "ForeignKeyViolation"
    assert failures == {expected: 1.0}
    value = ing.metrics.registry.get_sample_value
    assert value("rfidd_ingest_component_errors_total", {"component": "broken"}) == 1
    assert value("rfidd_ingest_component_errors_total", {"component": "good"}) == 0


def test_an_apply_only_plan_is_applied_without_a_write(sqlite_url: str) -> None:
    applied: list[int] = []

    class Watcher:
        name = "watcher"
        watched_zones: frozenset[str] = frozenset()

        def plan(self, view: BatchView) -> BatchPlan:
            return BatchPlan(apply=lambda: applied.append(len(view.changes)))

    ing = _ingestor(sqlite_url)
    ing.add_component(Watcher())
    _read(ing)
    assert applied == [1] and ing.stats.hook_errors == 0
