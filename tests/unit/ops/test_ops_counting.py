"""CountingService: counts read the presence tracker, name their exceptions, feed the loss
tracker of the ExitService, and survive a failed commit without counting twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opskit import BAG, SCARF, arrive, book, epc, hook, outbox, read
from waits import wait_until

from rfidd.context import ServiceContext
from rfidd.ops import CatalogService, CountingService, ExitService, OpsError, OpsSettings


@pytest.fixture
def counting(ctx: ServiceContext, catalog: CatalogService, exits: ExitService,
             settings: OpsSettings) -> CountingService:
    c = CountingService(ctx, catalog, exits, settings)
    c.start()
    return c


def test_count_from_tracker_names_exceptions_and_feeds_loss_tracker(
    ctx: ServiceContext, counting: CountingService, exits: ExitService
) -> None:
    stock = [epc(BAG, i) for i in range(10)]
    floor = [epc(SCARF, i) for i in range(5)]
    book(ctx, {**dict.fromkeys(stock, "stockroom"), **dict.fromkeys(floor, "floor")})
    stray = epc(SCARF, 77)
    read(ctx, 999.0, [(e, "stockroom") for e in stock])  # before the count: does not count
    started = counting.start_count(["stockroom", "floor"])
    cid = started["session_id"]
    assert started["progress"]["expected"] == 15
    read(ctx, 1000.0, [(e, "stockroom") for e in stock[2:8]] + [(e, "floor") for e in floor]
         + [(stock[8], "floor"), (stray, "floor")])
    live = counting.count(cid)["progress"]
    assert live["found"] == 11 and live["zones"]["floor"] == {"expected": 5, "found": 5}
    doc = counting.stop_count()
    assert {m["epc"] for m in doc["missing"]} == {stock[0], stock[1], stock[9]}
    assert [(m["epc"], m["found_zone"]) for m in doc["misplaced"]] == [(stock[8], "floor")]
    assert [(u["epc"], u["zone"]) for u in doc["unexpected"]] == [(stray, "floor")]
    assert outbox(ctx, "reports/count") == [doc]
    assert "missing," in counting.count_csv(cid)
    assert counting.count(cid)["status"] == "finished"
    # Missed twice (k=2) in a zone whose measured read rate is high: suspected lost.
    counting.start_count(["stockroom"])
    read(ctx, 2000.0, [(e, "stockroom") for e in stock[1:9]])
    second = counting.stop_count()
    assert {s["epc"] for s in second["shrinkage"]["newly_suspected"]} == {stock[0], stock[9]}
    assert {x["epc"] for x in exits.suspected()["suspected"]} == {stock[0], stock[9]}
    report = exits.shrinkage(0, time.time() + 10)
    assert {i.epc for i in report.items if i.status == "suspected"} == {stock[0], stock[9]}
    hook(ctx, arrive(stock[0], "stockroom"))  # seen again: reinstated
    assert {x["epc"] for x in exits.suspected()["suspected"]} == {stock[9]}


def test_count_validation_overlap_and_timed_stop(counting: CountingService) -> None:
    with pytest.raises(OpsError, match="unknown zone"):
        counting.start_count(["attic"])
    with pytest.raises(OpsError, match="zones"):
        counting.start_count([])
    with pytest.raises(OpsError, match="duration_s"):
        counting.start_count(["floor"], duration_s=0)
    started = counting.start_count(["floor"], duration_s=0.01)
    with pytest.raises(OpsError) as exc:
        counting.start_count(["floor", "stockroom"])
    assert exc.value.status == 409
    assert started["ends_at"] is not None

    def stopped_by_the_tick() -> bool:
        counting.tick()
        return not counting.running_counts()

    wait_until(stopped_by_the_tick, "the timed stop of the count")
    assert counting.count(started["session_id"])["status"] == "finished"
    with pytest.raises(OpsError) as exc:
        counting.stop_count()
    assert exc.value.status == 404


def test_a_failed_count_commit_is_retried_without_counting_twice(
    ctx: ServiceContext, counting: CountingService, exits: ExitService,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    import rfidd.ops.counting as counting_mod

    stock = [epc(BAG, 400 + i) for i in range(5)]
    book(ctx, dict.fromkeys(stock, "stockroom"))
    counting.start_count(["stockroom"])
    read(ctx, 3000.0, [(e, "stockroom") for e in stock[1:]])
    real = counting_mod.store.finish_count
    calls = {"n": 0}

    def flaky(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(counting_mod.store, "finish_count", flaky)
    with pytest.raises(RuntimeError):
        counting.stop_count()
    assert exits.loss.misses(stock[0]) == 0  # the failed attempt left no trace
    doc = counting.stop_count()  # staff (or the timed stop) retries
    assert [m["epc"] for m in doc["missing"]] == [stock[0]]
    assert exits.loss.misses(stock[0]) == 1


def test_a_count_running_at_stop_is_aborted_at_start(ctx: ServiceContext,
                                                     catalog: CatalogService,
                                                     exits: ExitService,
                                                     counting: CountingService) -> None:
    cid = counting.start_count(["floor"])["session_id"]
    again = CountingService(ctx, catalog, exits)
    again.start()
    assert again.running_counts() == [] and again.count(cid)["status"] == "aborted"
