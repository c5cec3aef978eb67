"""Schedules: stored count schedules on the daemon's scheduler, started through the callable
they were given."""

from __future__ import annotations

from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from rfidd.context import ServiceContext
from rfidd.ops import OpsError, OpsSettings, Schedules


class Starts:
    """Records the counts a schedule starts; `fail` makes them refused as staff would see."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, float | None]] = []
        self.fail = False

    def __call__(self, zones: list[str], trigger: str = "staff",
                 duration_s: float | None = None) -> dict[str, Any]:
        self.calls.append((zones, trigger, duration_s))
        if self.fail:
            raise OpsError(409, "zones: count cnt-1 is already running")
        return {}


def test_schedule_validation_add_list_delete(ctx: ServiceContext) -> None:
    schedules = Schedules(ctx, Starts(), lambda: None, OpsSettings())
    with pytest.raises(OpsError, match="cron"):
        schedules.add_schedule("every monday", ["floor"])
    with pytest.raises(OpsError, match="zones"):
        schedules.add_schedule("0 7 * * 1", ["attic"])
    with pytest.raises(OpsError, match="duration_s"):
        schedules.add_schedule("0 7 * * 1", ["floor"], 0)
    sched = schedules.add_schedule("0 7 * * 1", ["floor"], 60)
    assert sched["active"] is False  # no scheduler attached yet: stored, runs once attached
    assert schedules.schedules()[0]["id"] == sched["id"]
    schedules.delete_schedule(sched["id"])
    assert schedules.schedules() == []
    with pytest.raises(OpsError) as exc:
        schedules.delete_schedule(sched["id"])
    assert exc.value.status == 404


def test_attach_adds_the_tick_and_every_stored_schedule(ctx: ServiceContext) -> None:
    starts = Starts()
    ticks: list[int] = []
    schedules = Schedules(ctx, starts, lambda: ticks.append(1),
                          OpsSettings(default_count_duration_s=90))
    stored = schedules.add_schedule("30 6 * * *", ["stockroom"])
    scheduler = BackgroundScheduler(timezone="UTC")  # never started: jobs stay pending
    schedules.attach_scheduler(scheduler)
    jobs = {j.id: j for j in scheduler.get_jobs()}
    # (no shrinkage-report job: this service was given nothing to publish it with)
    assert set(jobs) == {"ops-tick", f"ops-count-{stored['id']}", "ops-retention"}
    jobs["ops-tick"].func()
    assert ticks == [1]
    later = schedules.add_schedule("0 7 * * 1", ["floor"], 60)
    assert later["active"] is True and f"ops-count-{later['id']}" in {
        j.id for j in scheduler.get_jobs()}
    schedules.delete_schedule(later["id"])
    assert f"ops-count-{later['id']}" not in {j.id for j in scheduler.get_jobs()}
    job = jobs[f"ops-count-{stored['id']}"]
    assert job.args == (f"count-{stored['id']}",)
    job.func(*job.args)  # not due yet (06:30 has not come since it was added): no count
    assert starts.calls == []
    schedules.scheduled_count(["stockroom"], stored["duration_s"])
    assert starts.calls == [(["stockroom"], "schedule", 90.0)]


def test_a_refused_scheduled_count_is_logged_not_raised(ctx: ServiceContext,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    starts = Starts()
    starts.fail = True
    Schedules(ctx, starts, lambda: None).scheduled_count(["floor"], 60.0)
    assert starts.calls == [(["floor"], "schedule", 60.0)]
    assert "scheduled count over ['floor'] not started" in caplog.text


def test_the_tick_pauses_while_nothing_needs_it_and_a_wake_resumes_it(
        ctx: ServiceContext) -> None:
    """An idle store's scheduler does not fire the ops tick for nothing; a count started (or a
    reception opened) calls wake_tick and the tick runs again."""
    busy = [False]
    ticks: list[int] = []
    schedules = Schedules(ctx, Starts(), lambda: ticks.append(1), OpsSettings(tick_s=3600.0),
                          busy=lambda: busy[0])
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.start()
    try:
        schedules.attach_scheduler(scheduler)
        job = scheduler.get_job("ops-tick")
        assert job is not None and job.next_run_time is not None
        busy[0] = True
        job.func()  # work to tick for: stays scheduled
        assert scheduler.get_job("ops-tick").next_run_time is not None
        busy[0] = False
        job.func()  # nothing left: paused
        assert ticks == [1, 1] and scheduler.get_job("ops-tick").next_run_time is None
        schedules.wake_tick()
        assert scheduler.get_job("ops-tick").next_run_time is not None
        schedules.wake_tick()  # idempotent
        assert scheduler.get_job("ops-tick").next_run_time is not None
    finally:
        scheduler.shutdown(wait=False)
