"""The chain's count accuracy and shrinkage over time, per store and for the chain, from the
count and shrinkage reports the sites publish (reports/count, reports/shrinkage), as figures
(JSON) and as SVG charts drawn by pygal on the server (no script, no CDN).

Why these figures: item accuracy is what a count found of what the books expected
(totals.found / totals.expected); the chain's is the sum of found over the sum of expected of
that day's counts, so a big store weighs what it holds. Shrinkage is lost value over net sales
(totals.value / totals.net_sales_value); the chain's sums both over the stores' reports of the
same period end. A report published again for the same count or period counts once (latest).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pygal
from pygal.style import Style
from sqlalchemy import Engine, select

from inventory.periods import local_date
from rfidd.hq.chain import site_names
from rfidd.hq.store import hq_site_messages, utc

MAX_REPORTS = 5000
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_STYLE = Style(background="white", plot_background="white", foreground="#222",
               foreground_strong="#222", foreground_subtle="#666",
               colors=("#222222", "#1f6fb2", "#c0392b", "#27ae60", "#8e44ad", "#d35400",
                       "#16a085", "#7f8c8d"),
               font_family="system-ui, sans-serif", value_font_size=10, title_font_size=14)


@dataclass(slots=True)
class Trend:
    """Percentages by day (YYYY-MM-DD), per store and for the chain (None: no figure)."""

    days: list[str] = field(default_factory=list)
    stores: dict[str, list[float | None]] = field(default_factory=dict)
    chain: list[float | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"days": self.days, "stores": self.stores, "chain": self.chain}


def _num(v: Any) -> Decimal | None:
    try:
        return None if v is None or isinstance(v, bool) else Decimal(str(v))
    except InvalidOperation:
        return None


def _zone(p: Mapping[str, Any]) -> tzinfo:
    """The site's time zone named in its report (sites before 0.x did not say: UTC)."""
    name = p.get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return UTC


def _day(ts: Any, fallback: datetime | None, tz: tzinfo) -> str | None:
    """The site's calendar day (inventory.periods) of a report's time, else of its arrival."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return local_date(ts, tz).isoformat()
    return local_date(fallback.timestamp(), tz).isoformat() if fallback else None


def _reports(engine: Engine, kind: str, site: str | None) -> list[tuple[str, Any, datetime]]:
    m = hq_site_messages
    stmt = select(m.c.site, m.c.payload, m.c.received_at).where(m.c.kind == f"report/{kind}")
    if site is not None:
        stmt = stmt.where(m.c.site == site)
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(m.c.received_at.desc(), m.c.id.desc())
                            .limit(MAX_REPORTS)).all()
    return [(r.site, r.payload, utc(r.received_at) or datetime.now(UTC)) for r in rows]


def _trend(points: Mapping[tuple[str, str], tuple[Decimal, Decimal]],
           names: Mapping[str, str | None]) -> Trend:
    """points: (site, day) -> (numerator, denominator) -> percentages."""
    days = sorted({d for _, d in points})
    sites = sorted({s for s, _ in points}, key=lambda s: (names.get(s) or s))
    t = Trend(days=days)

    def pct(num: Decimal, den: Decimal) -> float | None:
        return round(float(100 * num / den), 1) if den > 0 else None

    for s in sites:
        t.stores[names.get(s) or s] = [pct(*points[(s, d)]) if (s, d) in points else None
                                       for d in days]
    for d in days:
        num = sum((points[(s, d)][0] for s in sites if (s, d) in points), Decimal(0))
        den = sum((points[(s, d)][1] for s in sites if (s, d) in points), Decimal(0))
        t.chain.append(pct(num, den))
    return t


def accuracy_trend(engine: Engine, site: str | None = None) -> Trend:
    """Item accuracy of the counts, by the site's calendar day of their end."""
    seen: set[tuple[str, Any]] = set()
    points: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for s, p, received in _reports(engine, "count", site):
        if not isinstance(p, dict) or not isinstance(p.get("totals"), dict):
            continue
        key = (s, p.get("session_id") or received)
        found, expected = _num(p["totals"].get("found")), _num(p["totals"].get("expected"))
        day = _day(p.get("finished_at"), received, _zone(p))
        if key in seen or found is None or expected is None or day is None:
            continue
        seen.add(key)  # newest first: a count published again counts once
        if expected == 0:
            continue  # expected nothing (a go-live take-over): no accuracy, not a 0 % day
        f0, e0 = points.get((s, day), (Decimal(0), Decimal(0)))
        points[(s, day)] = (f0 + found, e0 + expected)
    return _trend(points, site_names(engine))


def shrinkage_trend(engine: Engine, site: str | None = None) -> Trend:
    """Lost value / net sales of the shrinkage reports, by the site's calendar day their
    period ends in (its last instant: the daily report of 1 Dec ends at 2 Dec 00:00)."""
    seen: set[tuple[str, Any, Any]] = set()
    points: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for s, p, received in _reports(engine, "shrinkage", site):
        if not isinstance(p, dict) or not isinstance(p.get("totals"), dict):
            continue
        key = (s, p.get("period_start"), p.get("period_end"))
        lost, net = _num(p["totals"].get("value")), _num(p["totals"].get("net_sales_value"))
        day = _day(_last_instant(p), received, _zone(p))
        if key in seen or lost is None or net is None or day is None:
            continue
        seen.add(key)
        l0, n0 = points.get((s, day), (Decimal(0), Decimal(0)))
        points[(s, day)] = (l0 + lost, n0 + net)
    return _trend(points, site_names(engine))


def _last_instant(p: Mapping[str, Any]) -> Any:
    """A period is [start, end): a daily report ending at midnight is the day before's."""
    end, start = p.get("period_end"), p.get("period_start")
    if isinstance(end, int | float) and not isinstance(end, bool):
        if isinstance(start, int | float) and not isinstance(start, bool) and start < end:
            return end - min(1.0, (end - start) / 2)
        return end
    return end


def chart_svg(trend: Trend, title: str, chain_label: str, *, percent_max: int | None = None,
              decimal_comma: bool = False) -> str:
    """A line per store and a bold one for the chain, each point labelled with its figure.
    Inline in the page: pygal's configuration <script> is left out (the page runs none)."""

    def figure(v: float) -> str:
        text = f"{v:.1f}\u202f%"
        return text.replace(".", ",") if decimal_comma else text

    chart = pygal.Line(title=title, style=_STYLE, js=[], width=760, height=320,
                       show_legend=True, legend_at_bottom=True, disable_xml_declaration=True,
                       print_values=True, allow_interruptions=True,
                       range=(0, percent_max) if percent_max else None,
                       value_formatter=figure, x_label_rotation=20)
    chart.x_labels = trend.days
    chart.add(chain_label, trend.chain, stroke_style={"width": 4})
    for name, values in trend.stores.items():
        chart.add(name, values)
    return _SCRIPT.sub("", str(chart.render(is_unicode=True)))
