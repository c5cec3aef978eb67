"""Schedules: jobs that survive restarts, run a missed job once within its grace, never twice.

A real SQLite database and a real APScheduler; "the daemon was down" is a new Schedules
instance on the same database whose clock is later than the previous one's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st
from waits import wait_until

from inventory.presence import PresenceTracker
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.metrics import Metrics
from rfidd.ops import OpsError, OpsSettings, store
from rfidd.ops.models import OpsCountSession
from rfidd.ops.schedules import STATE_PREFIX, Schedules, ScheduleSettings, last_due
from rfidd.store import repo
from rfidd.store.db import Database, open_database
from rfidd.store.models import Event

ZONES = ("stockroom", "floor")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = open_database(f"sqlite:///{tmp_path / 'site.db'}")
    yield d
    d.dispose()


CONFIG = Config.model_validate({
    "site": {"id": "sched", "name": "Schedules", "sgln": "urn:epc:id:sgln:3760001.00001.0"},
    "mqtt": {"enabled": False}, "zones": {z: {"kind": "stock"} for z in ZONES},
})


class Site:
    """One daemon's worth: a started scheduler and the Schedules service over `db`."""

    def __init__(self, db: Database, clock: float | None = None, **kw: Any) -> None:
        self.counts: list[tuple[list[str], float]] = []
        self.reports: list[tuple[float, float]] = []
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.scheduler.start()
        ctx = ServiceContext(CONFIG, db, Metrics(), PresenceTracker(300, 0, 1),
                             threading.RLock())

        def start_count(zones: list[str], trigger: str = "staff",
                        duration_s: float | None = None) -> dict[str, Any]:
            assert trigger == "schedule" and duration_s is not None
            self.counts.append((zones, duration_s))
            return {}

        self.s = Schedules(ctx, start_count, lambda: None, OpsSettings(),
                           publish_shrinkage=lambda a, b: self.reports.append((a, b)),
                           schedule_settings=ScheduleSettings(**kw),
                           clock=(lambda: clock) if clock is not None else time.time)
        self.s.attach_scheduler(self.scheduler)

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)


def _cron_at(t: datetime) -> str:
    return f"{t.minute} {t.hour} * * *"


def test_a_count_missed_while_down_runs_once_at_start_and_says_so(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    due = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0) - timedelta(
        minutes=20)
    first = Site(db, clock=now - 7200)  # added two hours ago, then the daemon went down
    sid = first.s.add_schedule(_cron_at(due), ["floor"], 60)["id"]
    first.stop()
    assert first.counts == []

    caplog.set_level(logging.INFO, "rfidd.schedules")
    second = Site(db)  # back up now: 20 minutes late, within the hour of grace
    wait_until(lambda: second.counts, "the missed count to run at start")
    assert second.counts == [(["floor"], 60.0)]
    assert "missed while the daemon was down: running it now" in caplog.text
    second.stop()
    # a catch-up (the built-in nightly jobs may have a catch-up of their own in the list,
    # depending on the time of day the test runs at)
    assert [r[2] for r in second.s.runs if r[0] == f"count-{sid}"] == [True]

    third = Site(db)  # restarted again: the same due time never runs twice
    third.s._fire(f"count-{sid}")  # even if APScheduler fired it
    [row] = third.s.schedules()
    third.stop()
    assert third.counts == []
    assert row["last_run"] == due.isoformat(timespec="seconds")
    assert row["next_run"] == (due + timedelta(days=1)).isoformat()


def test_a_miss_older_than_its_grace_is_skipped_and_logged(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    due = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0) - timedelta(
        minutes=90)
    first = Site(db, clock=now - 3 * 3600)
    first.s.add_schedule(_cron_at(due), ["stockroom"], 60, misfire_grace_s=600)  # its own grace
    first.stop()
    caplog.set_level(logging.INFO, "rfidd.schedules")
    second = Site(db)
    second.stop()
    assert second.counts == []
    assert "missed by more than its 600 s grace: skipped" in caplog.text
    assert second.s.schedules()[0]["misfire_grace_s"] == 600


def test_schedule_list_shows_the_next_run_and_delete_removes_the_job(db: Database) -> None:
    site = Site(db)
    try:
        res = site.s.add_schedule("0 7 * * 1", ["floor", "stockroom"])
        assert res["duration_s"] == 600 and res["misfire_grace_s"] == 3600
        nxt = datetime.fromisoformat(res["next_run"])
        assert nxt.weekday() == 0 and nxt.hour == 7 and nxt.timestamp() > time.time()
        jobs = {j["job"]: j for j in site.s.jobs()}
        assert set(jobs) == {"retention", "shrinkage-report", f"count-{res['id']}"}
        assert all(j["next_run"] for j in jobs.values())
        with pytest.raises(OpsError, match="cron"):
            site.s.add_schedule("every monday", ["floor"])
        with pytest.raises(OpsError, match="zones"):
            site.s.add_schedule("0 7 * * 1", ["attic"])
        with pytest.raises(OpsError, match="duration_s"):
            site.s.add_schedule("0 7 * * 1", ["floor"], 0)
        site.s.delete_schedule(res["id"])
        assert site.s.schedules() == []
        assert site.scheduler.get_job(f"ops-count-{res['id']}") is None
        with db.session() as s:
            assert store.load_state(s, STATE_PREFIX + f"count-{res['id']}") is None
        with pytest.raises(OpsError, match="unknown count schedule"):
            site.s.delete_schedule(res["id"])
    finally:
        site.stop()


def test_retention_deletes_past_each_horizon_and_keeps_the_rest(db: Database) -> None:
    now = time.time()
    day = 86400.0
    with db.write() as s:
        repo.enqueue(s, [repo.Message("report", "reports/x", {"n": i}, event_id=f"m{i}")
                         for i in range(3)], now=now - 30 * day)
        ids = [r.id for r in repo.outbox_pending(s, 10)]
        repo.mark_sent(s, ids[:1], now - 10 * day)  # sent long ago: goes
        repo.mark_sent(s, ids[1:2], now - 1 * day)  # sent yesterday: stays; ids[2]: unsent
        for i, age in enumerate((800, 10)):
            s.add(Event(event_id=f"e{i}", event_time=now - age * day, kind="object",
                        action="OBSERVE", epc_count=1, payload="{}", created_at=now))
        for i, (age, status) in enumerate(((500, "finished"), (500, "running"),
                                           (5, "finished"))):
            s.add(OpsCountSession(id=f"c{i}", status=status, zones="[]", trigger="staff",
                                  started_at=now - age * day, expected=0))
    site = Site(db, clock=now)
    try:
        assert site.s.retention() == {"outbox_rows": 1, "journal_rows": 1,
                                      "count_sessions": 1}
        assert site.s.retention() == {"outbox_rows": 0, "journal_rows": 0,
                                      "count_sessions": 0}
    finally:
        site.stop()
    with db.session() as s:
        assert {r.id for r in repo.outbox_pending(s, 10)} == {ids[2]}
        assert [e.event_id for e in s.query(Event)] == ["e1"]
        assert sorted(c.id for c in s.query(OpsCountSession)) == ["c1", "c2"]


def test_the_nightly_shrinkage_report_covers_the_previous_day(db: Database) -> None:
    now = time.time()
    due = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0) - timedelta(
        minutes=5)
    first = Site(db, clock=now - 600, shrinkage_report_cron=_cron_at(due))
    first.stop()
    second = Site(db, shrinkage_report_cron=_cron_at(due))
    wait_until(lambda: second.reports, "the report missed 5 minutes ago")
    second.stop()
    start, end = second.reports[0]
    midnight = due.replace(hour=0, minute=0)
    assert (start, end) == ((midnight - timedelta(days=1)).timestamp(), midnight.timestamp())


@settings(max_examples=60, deadline=None)
@given(minute=st.integers(0, 59), hour=st.integers(0, 23),
       since=st.floats(1.7e9, 1.8e9), span=st.floats(0, 5 * 86400))
def test_last_due_is_the_latest_fire_time_in_the_window(minute: int, hour: int, since: float,
                                                        span: float) -> None:
    trigger = CronTrigger.from_crontab(f"{minute} {hour} * * *", timezone=UTC)
    got = last_due(trigger, since, since + span)
    fires = []
    t = datetime.fromtimestamp(since, UTC).replace(hour=hour, minute=minute, second=0,
                                                   microsecond=0) - timedelta(days=1)
    while t.timestamp() <= since + span:
        if t.timestamp() > since:
            fires.append(t.timestamp())
        t += timedelta(days=1)
    assert got == (fires[-1] if fires else None)


@pytest.mark.parametrize(("field", "days"), [
    ("1", "mon"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"),
    ("6-7", "sat,sun"), ("*/3", "sun,wed,sat"), ("1,3", "mon,wed"), ("mon-fri", "mon-fri"),
])
def test_weekdays_are_read_as_crontab_numbers(field: str, days: str) -> None:
    """APScheduler's from_crontab would read 1 as Tuesday; crontab (and staff) mean Monday."""
    from rfidd.ops.schedules import _crontab_dow

    assert _crontab_dow(field) == days
    with pytest.raises(ValueError, match="day of week"):
        _crontab_dow("3-9")


def test_the_nightly_report_of_the_day_the_clocks_go_back_is_25_hours(db: Database) -> None:
    paris = ZoneInfo("Europe/Paris")
    site = Site(db, timezone="Europe/Paris")
    try:
        site.s._shrinkage_report(datetime(2026, 10, 26, 0, 30, tzinfo=paris).timestamp())
    finally:
        site.stop()
    [(start, end)] = site.reports
    assert start == datetime(2026, 10, 25, tzinfo=paris).timestamp()
    assert end == datetime(2026, 10, 26, tzinfo=paris).timestamp()
    assert end - start == 25 * 3600
