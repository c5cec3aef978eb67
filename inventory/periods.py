"""The one calendar convention of rfidd's charts and reports: days and weeks in the site's time
zone, weeks as ISO weeks (Monday 00:00 local to the next Monday 00:00 local), a week labelled
by its first day (its Monday).

Why one place: a chart that bucketed by rolling 7-day windows ending "now" put a loss of
Wednesday 2 December under "25 Nov" — a week that does not exist on any store's calendar; a
chart that bucketed by UTC day put a count finished at 00:30 in Paris on the day before. Days
and weeks are computed on the local wall clock (date arithmetic, then localised), so the week
of a DST change is 167 or 169 hours long and still starts at midnight.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo


def local_date(t: float, tz: tzinfo) -> date:
    """The calendar day (site time) of the instant `t` (epoch seconds)."""
    return datetime.fromtimestamp(t, UTC).astimezone(tz).date()


def day_start(d: date, tz: tzinfo) -> float:
    """Midnight, site time, at the start of day `d`, as epoch seconds."""
    return datetime.combine(d, time(0), tzinfo=tz).timestamp()


def week_monday(t: float, tz: tzinfo) -> date:
    """The Monday (site time) of the ISO week holding the instant `t`."""
    d = local_date(t, tz)
    return d - timedelta(days=d.weekday())


def last_weeks(now: float, n: int, tz: tzinfo) -> list[tuple[float, float, date]]:
    """The `n` ISO weeks ending with the one holding `now`, oldest first, as (start, end, Monday):
    [start, end) in epoch seconds, Monday 00:00 to the next Monday 00:00, site time. The last
    week is the current one, not over yet."""
    if n < 1:
        raise ValueError(f"weeks: expected at least 1, got {n}")
    this = week_monday(now, tz)
    mondays = [this - timedelta(weeks=i) for i in range(n - 1, -1, -1)]
    return [(day_start(m, tz), day_start(m + timedelta(weeks=1), tz), m) for m in mondays]


__all__ = ["day_start", "last_weeks", "local_date", "week_monday"]
