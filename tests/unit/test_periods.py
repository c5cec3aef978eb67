"""Weeks and days of the charts and reports (inventory.periods): ISO weeks Monday to Monday in
the site's time zone, a week labelled by its Monday; the page's shrinkage chart and HQ's chain
trends bucket by them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from inventory.catalog import Catalog, Product
from inventory.periods import day_start, last_weeks, local_date, week_monday
from inventory.shrinkage import ExitAlert, ShrinkageReport, shrinkage_report
from rfidd.hq.chain_charts import accuracy_trend, shrinkage_trend
from rfidd.hq.registry import register_site
from rfidd.hq.store import Batch, HqStore, SiteMessageRow
from rfidd.web.i18n import Formatter
from rfidd.web.page import weekly_shrinkage

PARIS = ZoneInfo("Europe/Paris")
G1 = "80614141123458"
CAT = Catalog([Product(G1, "SC-1", "Scarf", "U", "navy", "scarves", Decimal("450.00"), "EUR")])


def at(y: int, mo: int, d: int, h: int = 12, mi: int = 0, tz: Any = PARIS) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


@pytest.mark.parametrize(("when", "monday"), [
    (at(2026, 12, 2, 14), date(2026, 11, 30)),        # a Wednesday: its week began on Monday
    (at(2026, 11, 30, 0, 30), date(2026, 11, 30)),    # Monday 00:30 local (Sunday 23:30 UTC)
    (at(2026, 11, 29, 23, 30), date(2026, 11, 23)),   # Sunday 23:30 local: still last week
    (at(2027, 1, 1, 10), date(2026, 12, 28)),         # New Year's Day: ISO week 53 of 2026
    (at(2026, 10, 25, 2, 30), date(2026, 10, 19)),    # the Sunday clocks go back (in the fold)
    (at(2026, 10, 26, 0, 30), date(2026, 10, 26)),    # the Monday after, 00:30 (UTC+1 now)
    (at(2026, 3, 30, 0, 30), date(2026, 3, 30)),      # the Monday after clocks go forward
])
def test_week_monday_is_the_local_iso_week(when: float, monday: date) -> None:
    assert week_monday(when, PARIS) == monday


def test_monday_0030_local_is_sunday_in_utc() -> None:
    t = at(2026, 11, 30, 0, 30)
    assert local_date(t, PARIS) == date(2026, 11, 30)
    assert local_date(t, UTC) == date(2026, 11, 29)
    assert week_monday(t, UTC) == date(2026, 11, 23)  # why the zone matters


def test_last_weeks_run_midnight_to_midnight_across_dst_and_new_year() -> None:
    weeks = last_weeks(at(2027, 1, 1, 10), 11, PARIS)
    assert (weeks[0][2], weeks[-1][2]) == (date(2026, 10, 19), date(2026, 12, 28))
    for (a, b, m), nxt in pairwise(weeks):
        assert b == nxt[0]  # contiguous: no loss falls between two bars
        assert datetime.fromtimestamp(a, PARIS).hour == 0 and m.weekday() == 0
    hours = [(b - a) / 3600 for a, b, _ in weeks]
    assert hours[0] == 169  # 19 Oct: the week the clocks went back
    assert set(hours[1:]) == {168}
    assert weeks[-1][1] == day_start(date(2027, 1, 4), PARIS)
    spring = last_weeks(at(2026, 3, 31), 2, PARIS)
    assert [(b - a) / 3600 for a, b, _ in spring] == [167, 168]


def test_last_weeks_wants_one() -> None:
    with pytest.raises(ValueError, match="weeks: expected at least 1"):
        last_weeks(0.0, 0, PARIS)


def _shrinkage(alerts: list[ExitAlert]) -> Any:
    def report(a: float, b: float) -> ShrinkageReport:
        return shrinkage_report(a, b, suspected=[], exit_alerts=alerts,
                                sales_value=Decimal(0), currency="EUR", catalog=CAT,
                                gtin_of=lambda e: G1)
    return report


def test_page_chart_puts_a_loss_of_2_dec_under_the_week_of_30_nov() -> None:
    losses = [ExitAlert("a1", "E1", "exit", at(2026, 12, 2, 10)),         # Wednesday
              ExitAlert("a2", "E2", "exit", at(2026, 11, 30, 0, 30)),     # Monday 00:30
              ExitAlert("a3", "E3", "exit", at(2026, 11, 29, 23, 30))]    # Sunday 23:30
    weeks, series = weekly_shrinkage(_shrinkage(losses), at(2026, 12, 2, 15), PARIS, "by_zone")
    labels = [Formatter("en", "Europe/Paris").day(a) for a, _, _ in weeks]
    assert labels == ["26 Oct", "2 Nov", "9 Nov", "16 Nov", "23 Nov", "30 Nov"]
    assert series == {"exit": [0, 0, 0, 0, 1, 2]}


def _hq(tmp_path: Path, rows: list[tuple[str, dict[str, Any]]]) -> HqStore:
    store = HqStore.open(f"sqlite:///{tmp_path / 'hq.db'}", known_sites_only=True)
    d0 = datetime(2026, 12, 2, tzinfo=UTC)
    register_site(store.engine, "st-1", "Paris", d0)
    store.write_batch(Batch(site_messages=[SiteMessageRow("st-1", k, p, d0) for k, p in rows]))
    return store


def test_hq_trends_use_the_site_calendar_day(tmp_path: Path) -> None:
    def count(sid: str, t: float, found: int, **kw: Any) -> tuple[str, dict[str, Any]]:
        return ("report/count", {"type": "count", "session_id": sid, "finished_at": t,
                                 "totals": {"found": found, "expected": 10}, **kw})

    def daily(day: date, zone: str | None, lost: int) -> tuple[str, dict[str, Any]]:
        tz = ZoneInfo(zone) if zone else UTC
        return ("report/shrinkage", {
            "type": "shrinkage", "period_start": day_start(day, tz),
            "period_end": day_start(date.fromordinal(day.toordinal() + 1), tz),
            "totals": {"value": str(lost), "net_sales_value": "100"},
            **({"timezone": zone} if zone else {})})

    store = _hq(tmp_path, [
        count("c1", at(2026, 11, 30, 0, 30), 9, timezone="Europe/Paris"),  # 29 Nov in UTC
        count("c2", at(2026, 11, 29, 23, 30), 5, timezone="Europe/Paris"),
        count("c3", at(2026, 12, 1, 0, 30), 7),  # a site that does not say its zone: UTC
        daily(date(2026, 12, 30), "Europe/Paris", 1),
        daily(date(2026, 12, 31), None, 2),  # ends 1 Jan 00:00 UTC: still 31 Dec's losses
        daily(date(2027, 1, 1), "America/New_York", 3),  # ends 2 Jan 05:00 UTC
    ])
    acc = accuracy_trend(store.engine)
    assert (acc.days, acc.chain) == (["2026-11-29", "2026-11-30"], [50.0, 80.0])
    shr = shrinkage_trend(store.engine)
    assert (shr.days, shr.chain) == (["2026-12-30", "2026-12-31", "2027-01-01"], [1.0, 2.0, 3.0])
