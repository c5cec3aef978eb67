"""Schedules: stored count schedules (crontab, zones, duration) run on the daemon's
APScheduler, and the periodic ops tick (live count refresh, timed stops, reception rules).

Threads: scheduler jobs run on APScheduler's threads and call the callables given here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from rfidd.context import ServiceContext
from rfidd.ops import store
from rfidd.ops.common import OpsError, OpsSettings

log = logging.getLogger("rfidd.ops")

StartCount = Callable[..., dict[str, Any]]  # (zones, trigger=..., duration_s=...) -> progress


class Schedules:
    """Count schedules; `start_count` starts a count, `tick` is the periodic ops job."""

    def __init__(self, ctx: ServiceContext, start_count: StartCount, tick: Callable[[], None],
                 settings: OpsSettings | None = None) -> None:
        self.ctx = ctx
        self.start_count = start_count
        self.tick = tick
        self.settings = settings or OpsSettings()
        self._scheduler: Any = None

    def attach_scheduler(self, scheduler: Any) -> None:
        """Add the tick job and every stored count schedule to the daemon's scheduler."""
        self._scheduler = scheduler
        scheduler.add_job(self.tick, "interval", seconds=self.settings.tick_s, id="ops-tick",
                          replace_existing=True)
        with self.ctx.db.session() as s:
            rows = store.schedules(s)
        for r in rows:
            try:
                self._schedule_job(r["id"], r["cron"], r["zones"], r["duration_s"])
            except ValueError as exc:
                log.error("ops: count schedule %s (%r) ignored: %s", r["id"], r["cron"], exc)

    def _schedule_job(self, sid: int, cron: str, zones: list[str], duration_s: float) -> None:
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(cron, timezone=self.ctx.config.site.timezone)
        if self._scheduler is not None:
            self._scheduler.add_job(self.scheduled_count, trigger, args=[zones, duration_s],
                                    id=f"ops-count-{sid}", replace_existing=True)

    def scheduled_count(self, zones: list[str], duration_s: float) -> None:
        try:
            self.start_count(zones, trigger="schedule", duration_s=duration_s)
        except OpsError as exc:
            log.warning("ops: scheduled count over %s not started: %s", zones, exc)

    def add_schedule(self, cron: str, zones: Sequence[str],
                     duration_s: float | None = None) -> dict[str, Any]:
        from apscheduler.triggers.cron import CronTrigger

        unknown = [z for z in zones if z not in self.ctx.config.zones]
        if not zones or unknown:
            raise OpsError(400, f"zones: unknown or none: {unknown or zones}")
        try:
            CronTrigger.from_crontab(cron, timezone=self.ctx.config.site.timezone)
        except ValueError as exc:
            raise OpsError(400, f"cron: {cron!r} is not a crontab expression "
                           f"(minute hour day month weekday): {exc}") from None
        d = self.settings.default_count_duration_s if duration_s is None else duration_s
        if d <= 0:
            raise OpsError(400, "duration_s: must be > 0")
        with self.ctx.transaction() as s:
            sid = store.add_schedule(s, cron, list(zones), d, time.time())
        self._schedule_job(sid, cron, list(zones), d)
        return {"id": sid, "cron": cron, "zones": list(zones), "duration_s": d,
                "active": self._scheduler is not None}

    def schedules(self) -> list[dict[str, Any]]:
        with self.ctx.db.session() as s:
            return store.schedules(s)

    def delete_schedule(self, sid: int) -> None:
        with self.ctx.transaction() as s:
            if not store.delete_schedule(s, sid):
                raise OpsError(404, f"unknown count schedule {sid}")
        if self._scheduler is not None:
            with contextlib.suppress(Exception):  # JobLookupError: never got scheduled
                self._scheduler.remove_job(f"ops-count-{sid}")


__all__ = ["Schedules"]
