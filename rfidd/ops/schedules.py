"""Scheduled work that survives restarts: count schedules, retention, the nightly shrinkage
report, and the periodic ops tick (live counts, timed stops, reception rules).

APScheduler (in memory) fires the jobs; the site database remembers, per job, the scheduled time
of its last run (`ops_state`, key `schedule:<job>`). That is the persistent half of a job store,
without pickling callables:
- at start, a job whose latest due time falls after its last run and within its misfire grace
  (default one hour) runs at once, and the log says it is a catch-up; an older miss is logged
  and skipped;
- a run records its due time before it starts, and a due time already recorded never runs
  again, so neither a restart nor a late tick runs a job twice (a crash between the record
  and the run loses that one run, and the log shows it: at most once, never twice).

Threads: jobs run on APScheduler's pool; every method is safe to call from the API threads.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import delete

from inventory.periods import day_start, local_date
from rfidd.context import ServiceContext
from rfidd.ops import store
from rfidd.ops.common import OpsError, OpsSettings
from rfidd.ops.models import OpsCountSession, OpsState
from rfidd.store import repo
from rfidd.store.models import Event

log = logging.getLogger("rfidd.schedules")
TICK_JOB = "ops-tick"

STATE_PREFIX = "schedule:"
RETENTION_JOB = "retention"
SHRINKAGE_JOB = "shrinkage-report"
DAY_S = 86400.0

StartCount = Callable[..., dict[str, Any]]  # (zones, trigger=..., duration_s=...) -> progress
PublishShrinkage = Callable[[float, float], Any]


@dataclass(frozen=True)
class ScheduleSettings:
    """What the service needs of the config ([schedules] in the TOML file)."""

    timezone: str = "UTC"
    misfire_grace_s: float = 3600.0
    default_count_duration_s: float = 600.0
    retention_cron: str = "30 3 * * *"
    outbox_sent_days: float = 7.0
    journal_days: float = 730.0
    count_days: float = 400.0
    shrinkage_report_cron: str | None = "15 2 * * *"

    @classmethod
    def from_config(cls, cfg: Any, default_count_duration_s: float = 600.0
                    ) -> ScheduleSettings:
        s = cfg.schedules
        return cls(timezone=cfg.site.timezone, misfire_grace_s=s.misfire_grace_s,
                   default_count_duration_s=default_count_duration_s,
                   retention_cron=s.retention_cron, outbox_sent_days=s.outbox_sent_days,
                   journal_days=s.journal_days, count_days=s.count_days,
                   shrinkage_report_cron=s.shrinkage_report_cron)


@dataclass
class _Job:
    id: str
    cron: str
    trigger: CronTrigger
    grace_s: float
    run: Callable[[float], Any]  # called with the due time (epoch s)
    what: str


def last_due(trigger: CronTrigger, since: float, now: float) -> float | None:
    """The latest fire time of `trigger` in (since, now], or None."""
    tz = trigger.timezone
    t = trigger.get_next_fire_time(None, datetime.fromtimestamp(since, tz)
                                   + timedelta(microseconds=1))
    last = None
    while t is not None and t.timestamp() <= now:
        last = t.timestamp()
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return last


_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_dow(field: str) -> str:
    """crontab's weekday numbers (0 or 7 = Sunday) as names: APScheduler's from_crontab reads
    numbers as 0 = Monday, so "0 7 * * 1" would run on Tuesdays."""
    out: list[str] = []
    for part in field.split(","):
        rng, _, step = part.partition("/")
        if not re.fullmatch(r"\*|\d+(-\d+)?", rng):
            out.append(part)  # names (mon-fri) mean the same to both
            continue
        lo, _, hi = rng.partition("-")
        start, end = (0, 6) if rng == "*" else (int(lo), int(hi or lo))
        if end > 7 or start > end:
            raise ValueError(f"day of week {part!r}: expected 0-7 (0 or 7 = Sunday)")
        days = range(start, end + 1, int(step) if step else 1)
        out.extend(_DOW[d] for d in days)
    return ",".join(dict.fromkeys(out))


def _cron(expr: str, tz: str) -> CronTrigger:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    if fields[4] != "*":
        fields[4] = _crontab_dow(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=ZoneInfo(tz))


class Schedules:
    """Count schedules plus the site's housekeeping jobs (see the module docstring).

    `start_count` starts a count, `tick` is the periodic ops job; both run once
    `attach_scheduler` gave the service the daemon's scheduler. With `busy` (a running count or
    an open reception: what the tick has work for), the tick job pauses itself when there is
    none, and `wake_tick` (called when a count starts or a reception opens) resumes it: an
    idle store's scheduler does not wake every `tick_s` for nothing."""

    def __init__(self, ctx: ServiceContext, start_count: StartCount, tick: Callable[[], None],
                 settings: OpsSettings | None = None, *,
                 publish_shrinkage: PublishShrinkage | None = None,
                 schedule_settings: ScheduleSettings | None = None,
                 clock: Callable[[], float] = time.time,
                 busy: Callable[[], bool] | None = None) -> None:
        self.db = ctx.db
        self.start_count = start_count
        self.tick = tick
        self.busy = busy
        self._tick_lock = threading.Lock()  # the pause decision against a concurrent wake
        self._tick_paused = False
        self.ops_settings = settings or OpsSettings()
        self.settings = schedule_settings or ScheduleSettings.from_config(
            ctx.config, self.ops_settings.default_count_duration_s)
        self.zones = frozenset(ctx.config.zones)
        self.publish_shrinkage = publish_shrinkage
        self.clock = clock
        self.scheduler: Any = None
        self._jobs: dict[str, _Job] = {}
        self._run_lock = threading.Lock()  # serialises the check-and-record of a due time
        self.runs: list[tuple[str, float, bool]] = []  # (job, due, catch-up): for tests and logs

    # -- start ------------------------------------------------------------------------------
    def attach_scheduler(self, scheduler: Any) -> None:
        """Add the tick and every job; run at once those missed while the daemon was down
        and still within their grace."""
        self.scheduler = scheduler
        scheduler.add_job(self._tick_job, "interval", seconds=self.ops_settings.tick_s,
                          id=TICK_JOB, replace_existing=True)
        s = self.settings
        self._add(_Job(RETENTION_JOB, s.retention_cron, _cron(s.retention_cron, s.timezone),
                       s.misfire_grace_s, self.retention, "retention"))
        if s.shrinkage_report_cron and self.publish_shrinkage is not None:
            self._add(_Job(SHRINKAGE_JOB, s.shrinkage_report_cron,
                           _cron(s.shrinkage_report_cron, s.timezone), s.misfire_grace_s,
                           self._shrinkage_report, "nightly shrinkage report"))
        with self.db.session() as ses:
            rows = store.schedules(ses)
        for r in rows:
            try:
                self._add(self._count_job(r["id"], r["cron"], r["zones"], r["duration_s"],
                                          self._grace_of(r["id"])))
            except ValueError as exc:
                log.error("count schedule %s (%r) ignored: %s", r["id"], r["cron"], exc)

    def _count_job(self, sid: int, cron: str, zones: list[str], duration_s: float,
                   grace_s: float) -> _Job:
        def run(_due: float) -> None:
            self.scheduled_count(list(zones), duration_s)

        return _Job(f"count-{sid}", cron, _cron(cron, self.settings.timezone), grace_s, run,
                    f"count over {', '.join(zones)}")

    def scheduled_count(self, zones: list[str], duration_s: float) -> None:
        """A count started by a schedule; one already running wins (logged, not raised)."""
        try:
            self.start_count(zones, trigger="schedule", duration_s=duration_s)
        except OpsError as exc:
            log.warning("ops: scheduled count over %s not started: %s", zones, exc)

    def _add(self, job: _Job) -> None:
        self._jobs[job.id] = job
        if self.scheduler is None:  # stored; scheduled by attach_scheduler
            return
        now = self.clock()
        state = self._state(job.id)
        missed = None
        if not state:  # a new job: nothing before now is owed
            self._save_state(job.id, {"since": now})
        else:
            last = state.get("last_due")
            base = float(last) if last is not None else float(state.get("since", now))
            missed = last_due(job.trigger, max(base, now - job.grace_s), now)
            older = last_due(job.trigger, base, now - job.grace_s)
            if missed is None and older is not None:
                log.warning("scheduled %s due at %s was missed by more than its %.0f s grace: "
                            "skipped", job.what, _iso(older, self.settings.timezone),
                            job.grace_s)
        kwargs: dict[str, Any] = {}
        if missed is not None:
            log.warning("scheduled %s due at %s was missed while the daemon was down: running "
                        "it now (within its %.0f s grace)", job.what,
                        _iso(missed, self.settings.timezone), job.grace_s)
            kwargs["next_run_time"] = datetime.now(job.trigger.timezone)
        self.scheduler.add_job(self._fire, job.trigger, args=[job.id], id=f"ops-{job.id}",
                               replace_existing=True, misfire_grace_time=max(1, int(job.grace_s)),
                               coalesce=True, max_instances=1, **kwargs)

    # -- running ------------------------------------------------------------------------------
    def _tick_job(self) -> None:
        """The tick; then paused if nothing needs the next one (`busy` is read after a wake's
        state change was made, under the lock `wake_tick` takes: no count is left unticked)."""
        self.tick()
        with self._tick_lock:
            if self.busy is None or self.scheduler is None or self.busy():
                return
            try:
                self.scheduler.pause_job(TICK_JOB)
            except Exception as exc:  # the scheduler shut down meanwhile: nothing to pause
                log.debug("ops tick not paused: %s", exc)
                return
            self._tick_paused = True

    def wake_tick(self) -> None:
        """A count started or a reception opened: the tick runs again every `tick_s`."""
        with self._tick_lock:
            if not self._tick_paused or self.scheduler is None:
                return
            try:
                self.scheduler.resume_job(TICK_JOB)
            except Exception as exc:
                log.debug("ops tick not resumed: %s", exc)
                return
            self._tick_paused = False

    def _fire(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            return
        now = self.clock()
        with self._run_lock:
            state = self._state(job_id)
            last = state.get("last_due")
            floor = max(float(last) if last is not None else float(state.get("since", 0.0)),
                        now - job.grace_s)
            due = last_due(job.trigger, floor, now)
            if due is None:
                log.info("scheduled %s: nothing due (already ran)", job.what)
                return
            catch_up = now - due > 60
            self._save_state(job_id, {**state, "last_due": due, "ran_at": now})
        self.runs.append((job_id, due, catch_up))
        log.info("scheduled %s due at %s: running%s", job.what,
                 _iso(due, self.settings.timezone),
                 f" {now - due:.0f} s late (catch-up)" if catch_up else "")
        try:
            job.run(due)
        except Exception as exc:  # logged, counted in the log; the next due time runs again
            log.error("scheduled %s due at %s failed: %s", job.what,
                      _iso(due, self.settings.timezone), exc)

    def retention(self, _due: float | None = None) -> dict[str, int]:
        """Delete what is past its horizon: sent outbox rows, old journal and count rows."""
        s, now = self.settings, self.clock()
        with self.db.write() as ses:
            outbox = repo.purge_sent(ses, s.outbox_sent_days * DAY_S, now)
            journal = _rowcount(ses.execute(
                delete(Event).where(Event.event_time < now - s.journal_days * DAY_S)
                .execution_options(synchronize_session=False)))
            counts = _rowcount(ses.execute(
                delete(OpsCountSession)
                .where(OpsCountSession.status != "running",
                       OpsCountSession.started_at < now - s.count_days * DAY_S)
                .execution_options(synchronize_session=False)))
        result = {"outbox_rows": int(outbox), "journal_rows": int(journal),
                  "count_sessions": int(counts)}
        log.info("retention: deleted %s", " ".join(f"{k}={v}" for k, v in result.items()))
        return result

    def _shrinkage_report(self, due: float) -> None:
        """Yesterday (site time zone) relative to the due time."""
        tz = ZoneInfo(self.settings.timezone)
        today = local_date(due, tz)  # inventory.periods: the one calendar of the reports
        assert self.publish_shrinkage is not None
        self.publish_shrinkage(day_start(today - timedelta(days=1), tz), day_start(today, tz))

    # -- count schedules (the API) -----------------------------------------------------------
    def add_schedule(self, cron: str, zones: Sequence[str], duration_s: float | None = None,
                     misfire_grace_s: float | None = None) -> dict[str, Any]:
        unknown = [z for z in zones if z not in self.zones]
        if not zones or unknown:
            raise OpsError(400, f"zones: unknown or none: {unknown or list(zones)}")
        try:
            _cron(cron, self.settings.timezone)
        except ValueError as exc:
            raise OpsError(400, f"cron: {cron!r} is not a crontab expression "
                           f"(minute hour day month weekday): {exc}") from None
        d = self.settings.default_count_duration_s if duration_s is None else duration_s
        if d <= 0:
            raise OpsError(400, "duration_s: must be > 0")
        grace = self.settings.misfire_grace_s if misfire_grace_s is None else misfire_grace_s
        if grace < 0:
            raise OpsError(400, "misfire_grace_s: must be >= 0")
        now = self.clock()
        with self.db.write() as ses:
            sid = store.add_schedule(ses, cron, list(zones), d, now)
            store.save_state(ses, STATE_PREFIX + f"count-{sid}",
                             {"since": now, "grace_s": grace}, now)
        self._add(self._count_job(sid, cron, list(zones), d, grace))
        return {**self._describe({"id": sid, "cron": cron, "zones": list(zones),
                                  "duration_s": d, "created_at": now}),
                "active": self.scheduler is not None}

    def schedules(self) -> list[dict[str, Any]]:
        """Count schedules with their next and last run."""
        with self.db.session() as ses:
            rows = store.schedules(ses)
        return [self._describe(r) for r in rows]

    def jobs(self) -> list[dict[str, Any]]:
        """Every job with its next and last run (count schedules and housekeeping)."""
        return [{"job": j.id, "what": j.what, "cron": j.cron, "misfire_grace_s": j.grace_s,
                 **self._times(j.id)} for j in self._jobs.values()]

    def delete_schedule(self, sid: int) -> None:
        with self.db.write() as ses:
            if not store.delete_schedule(ses, sid):
                raise OpsError(404, f"unknown count schedule {sid}")
            ses.execute(delete(OpsState).where(
                OpsState.key == STATE_PREFIX + f"count-{sid}"))
        self._jobs.pop(f"count-{sid}", None)
        if self.scheduler is not None:
            with contextlib.suppress(Exception):  # JobLookupError: never got scheduled
                self.scheduler.remove_job(f"ops-count-{sid}")

    def _describe(self, row: dict[str, Any]) -> dict[str, Any]:
        jid = f"count-{row['id']}"
        job = self._jobs.get(jid)
        return {**row, "misfire_grace_s": job.grace_s if job else self._grace_of(row["id"]),
                **self._times(jid)}

    def _times(self, jid: str) -> dict[str, Any]:
        tz = self.settings.timezone
        job = self.scheduler.get_job(f"ops-{jid}") if self.scheduler is not None else None
        nxt = getattr(job, "next_run_time", None) if job is not None else None
        last = self._state(jid).get("last_due")
        return {"next_run": nxt.isoformat() if nxt is not None else None,
                "last_run": _iso(float(last), tz) if last is not None else None}

    # -- state --------------------------------------------------------------------------------
    def _grace_of(self, sid: int) -> float:
        return float(self._state(f"count-{sid}").get("grace_s", self.settings.misfire_grace_s))

    def _state(self, jid: str) -> dict[str, Any]:
        with self.db.session() as ses:
            value = store.load_state(ses, STATE_PREFIX + jid)
        return value if isinstance(value, dict) else {}

    def _save_state(self, jid: str, value: dict[str, Any]) -> None:
        with self.db.write() as ses:
            store.save_state(ses, STATE_PREFIX + jid, value, self.clock())


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _iso(t: float, tz: str) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).isoformat(timespec="seconds")


__all__ = ["ScheduleSettings", "Schedules", "last_due"]
