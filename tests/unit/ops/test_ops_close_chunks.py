"""A big count close is booked in chunks, each its own short hold of the domain lock: the
ingest keeps committing reads between them, a failure mid-way resumes with the same events,
and a close a crash interrupted is marked partial at the next start."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from inventory.presence import ChangeKind
from readers.base import TagRead
from rfidd.benchmark.staffops import Site
from rfidd.ops import books as B
from rfidd.ops import store
from rfidd.ops.counting import CountingService
from rfidd.ops.models import OpsCountSession
from rfidd.pipeline import BatchPlan, BatchView
from rfidd.store.models import Event

N, CHUNK = 600, 25


def _counted_site(tmp_path: Path) -> tuple[Site, list[str]]:
    """A site whose N items were taken over, with a second count running that saw them all."""
    site = Site(str(tmp_path), churn_items=20, chunk=CHUNK)
    items = site.epcs(N)
    site.place(items, "stockroom", 1000.0)
    c = site.ops.counting
    c.start_count(["stockroom", "floor"], adopt=True)
    site.place(items, "stockroom", 1100.0)
    assert len(c.stop_count()["books"]["taken_over"]) == N
    c.start_count(["stockroom", "floor"])
    site.place(items, "stockroom", 1200.0)
    return site, items


class _Marker:
    """An ingest component that notes, under the domain lock, each committed batch."""

    name = "marker"
    watched_zones: frozenset[str] = frozenset()

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def plan(self, view: BatchView) -> BatchPlan | None:
        if not any(c.kind is not ChangeKind.DEPARTED for c in view.changes):
            return None
        return BatchPlan(apply=lambda: self.order.append("ingest"))


def test_the_ingest_commits_between_the_chunks_of_a_count_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, _items = _counted_site(tmp_path)
    order: list[str] = []  # appended under the domain lock: the order the lock was taken
    site.ing.add_component(_Marker(order))
    first_chunk = threading.Event()
    closing = store.closing_count

    def noted(s: Any, count_id: str, booked: int, of: int) -> None:
        order.append("chunk")
        first_chunk.set()
        closing(s, count_id, booked, of)

    monkeypatch.setattr(store, "closing_count", noted)

    def ingest() -> None:  # reads arrive while the close runs (waiting for the lock)
        assert first_chunk.wait(30)
        for k in range(3):
            site.ing.process([("churn", [TagRead(e, "churn", 1 + k % 2, -50.0, 2000.0 + k)
                                         for e in site.churn_epcs])])

    t = threading.Thread(target=ingest)
    t.start()
    try:
        doc = site.ops.counting.stop_count()
    finally:
        t.join(60)
    try:
        assert doc["totals"]["found"] == N and doc["books"]["observed"] == N
        assert order.count("chunk") == N // CHUNK and order.count("ingest") == 3
        last_chunk = len(order) - 1 - order[::-1].index("chunk")
        assert order.index("ingest") < last_chunk, order  # not stalled until the end
        with site.db.session() as s:
            assert s.scalar(select(OpsCountSession.status).where(
                OpsCountSession.id == doc["session_id"])) == "finished"
    finally:
        site.close()


def test_a_failed_close_resumes_with_the_same_events_and_a_crash_is_partial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, _items = _counted_site(tmp_path)
    try:
        with site.db.session() as s:
            before = s.scalar(select(func.count()).select_from(Event))
        calls = [0]
        book = B.book_chunk

        def failing(*a: Any, **k: Any) -> None:
            calls[0] += 1
            if calls[0] == 4:
                raise RuntimeError("disk full")
            book(*a, **k)

        monkeypatch.setattr(B, "book_chunk", failing)
        c = site.ops.counting
        (cid,) = c.running_counts()
        with pytest.raises(RuntimeError, match="disk full"):
            c.stop_count()
        with site.db.session() as s:
            row = s.get(OpsCountSession, cid)
            assert row is not None and row.status == "closing"
            assert row.totals is not None and f'"booked":{3 * CHUNK},"of":{N}' in row.totals
        doc = c.stop_count()  # resumes from the 4th chunk
        assert doc["books"]["observed"] == N and doc["books"]["events"] == N
        with site.db.session() as s:
            after = s.scalar(select(func.count()).select_from(Event))
        assert after - before == N  # one cycle_counting event per item, none twice
        assert c.running_counts() == []
    finally:
        site.close()


def test_a_count_left_closing_is_marked_partial_at_start(tmp_path: Path) -> None:
    site, _items = _counted_site(tmp_path)
    try:
        (cid,) = site.ops.counting.running_counts()
        with site.ctx.transaction() as s:
            store.closing_count(s, cid, 100, N)
        fresh = CountingService(site.ctx, site.ops.catalog, site.ops.exits)
        fresh.start()
        with site.db.session() as s:
            row = s.get(OpsCountSession, cid)
            assert row is not None and row.status == "partial"
            assert row.finished_at is not None
    finally:
        site.close()


def test_a_chunk_whose_books_changed_after_planning_is_planned_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, items = _counted_site(tmp_path)
    try:
        plan = B.plan_chunk
        sold = items[0]

        def then_a_sale(*a: Any, **k: Any) -> Any:
            planned = plan(*a, **k)
            if sold in a[3]:  # sold at the till between planning and writing this chunk
                res = site.books.handle("sale", {"txn": "R-1", "epcs": [sold]})
                assert res.rejected == 0
            return planned

        monkeypatch.setattr(B, "plan_chunk", then_a_sale)
        doc = site.ops.counting.stop_count()
        assert doc["books"]["not_stock"] == [sold]  # the sale is honoured, not overwritten
        assert doc["books"]["observed"] == N - 1
        assert site.books.item_state(sold)["status"] == "sold"  # type: ignore[index]
    finally:
        site.close()
