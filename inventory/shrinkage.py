"""Shrinkage: items that vanish from stock without being sold or shipped.

Three parts:
- LossTracker: an item missed by consecutive counts becomes suspected lost, but only once the
  misses are convincing given how well each zone actually reads. A zone's read rate is measured,
  not configured: of the items known to be present at a count (found then, or missed then and
  seen again later), the share the count found.
- ExitMonitor: a read of an unsold item in an exit zone is an alert (debounced per item) and an
  `entering_exiting` event with CBV 2.0 disposition `stolen` (CBV has no "suspected" qualifier;
  the event carries `suspected: True` in its extensions and the alert is what staff act on).
- shrinkage_report: the period's losses valued at retail price (and cost), confirmed (an exit
  alert resolved as a loss) vs suspected (an unresolved exit alert, or missed by counts), by
  category, SKU and home zone, with the rate on net sales; DEFINITIONS states each figure.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from inventory.catalog import Product
from inventory.counting import CountResult
from inventory.events import Action, ItemEvent, stable_event_id

GtinOf = Callable[[str], str | None]
EXIT_BIZ_STEP = "entering_exiting"
EXIT_DISPOSITION = "stolen"
REPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ZoneReadRate:
    zone: str
    hits: int  # items read by a count while present
    missed_present: int  # items a count missed that turned out to be there
    rate: float  # smoothed estimate used for confidences

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "hits": self.hits, "missed_present": self.missed_present,
                "rate": self.rate}


@dataclass(frozen=True, slots=True)
class SuspectedLoss:
    epc: str
    zone: str  # booked zone at the last missed count
    misses: int  # consecutive counts that missed it
    confidence: float  # 1 - prod(1 - read rate of the zone of each miss)
    first_missed_at: float
    suspected_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"epc": self.epc, "zone": self.zone, "misses": self.misses,
                "confidence": self.confidence, "first_missed_at": self.first_missed_at,
                "suspected_at": self.suspected_at}


@dataclass(frozen=True, slots=True)
class LossUpdate:
    newly_suspected: tuple[SuspectedLoss, ...]
    reinstated: tuple[str, ...]


class LossTracker:
    """Consecutive-miss bookkeeping across counts; O(misses) memory, O(1) per ordinary read.

    An item is suspected lost after at least `counts_before_suspected` consecutive misses AND a
    confidence of at least `min_confidence`. Read rates start from a prior (`prior_read_rate`
    worth `prior_weight` observations) so the first counts cannot swing them to 0 or 1.
    """

    def __init__(
        self,
        counts_before_suspected: int = 2,
        *,
        min_confidence: float = 0.95,
        prior_read_rate: float = 0.9,
        prior_weight: float = 20.0,
    ) -> None:
        if counts_before_suspected < 1:
            raise ValueError("counts_before_suspected must be >= 1")
        if not 0 < min_confidence < 1:
            raise ValueError("min_confidence must be between 0 and 1 (exclusive)")
        if not 0 < prior_read_rate < 1 or prior_weight < 0:
            raise ValueError("prior_read_rate must be in (0, 1) and prior_weight >= 0")
        self.k = counts_before_suspected
        self.min_confidence = min_confidence
        self.prior_read_rate = prior_read_rate
        self.prior_weight = prior_weight
        self._misses: dict[str, list[tuple[str, float]]] = {}
        self._suspected: dict[str, SuspectedLoss] = {}
        self._hits: Counter[str] = Counter()
        self._missed_present: Counter[str] = Counter()

    # -- read rates -------------------------------------------------------------------------
    def read_rate(self, zone: str) -> float:
        hits, missed = self._hits[zone], self._missed_present[zone]
        rate = (hits + self.prior_read_rate * self.prior_weight) / (
            hits + missed + self.prior_weight
        )
        return min(max(rate, 1e-6), 1 - 1e-9)

    def read_rates(self) -> dict[str, ZoneReadRate]:
        zones = sorted(self._hits.keys() | self._missed_present.keys())
        return {
            z: ZoneReadRate(z, self._hits[z], self._missed_present[z], self.read_rate(z))
            for z in zones
        }

    def confidence(self, epc: str) -> float:
        """How sure we are the item is gone: 1 - P(a present item is missed by every miss)."""
        misses = self._misses.get(epc)
        if not misses:
            return 0.0
        log_all_missed = sum(math.log1p(-self.read_rate(z)) for z, _ in misses)
        return 1.0 - math.exp(log_all_missed)

    # -- inputs -----------------------------------------------------------------------------
    def record_count(self, result: CountResult, at: float | None = None) -> LossUpdate:
        """Take a finished count into account."""
        t = result.finished_at if at is None else at
        located = result.found.union(m.epc for m in result.misplaced)
        reinstated = [e for e in sorted(located & self._misses.keys()) if self._present(e)]
        for zone, tally in result.per_zone.items():
            self._hits[zone] += tally.found + tally.misplaced_in
        newly: list[SuspectedLoss] = []
        for m in result.missing:
            misses = self._misses.setdefault(m.epc, [])
            misses.append((m.booked_zone, t))
            if m.epc in self._suspected:
                old = self._suspected[m.epc]
                self._suspected[m.epc] = SuspectedLoss(
                    m.epc, m.booked_zone, len(misses), self.confidence(m.epc),
                    old.first_missed_at, old.suspected_at,
                )
                continue
            if len(misses) >= self.k:
                conf = self.confidence(m.epc)
                if conf >= self.min_confidence:
                    s = SuspectedLoss(m.epc, m.booked_zone, len(misses), conf, misses[0][1], t)
                    self._suspected[m.epc] = s
                    newly.append(s)
        return LossUpdate(tuple(newly), tuple(reinstated))

    def seen(self, epc: str) -> bool:
        """Any read of the item (cheap when it has no misses); True if it was suspected lost."""
        if epc not in self._misses:
            return False
        return self._present(epc)

    def _present(self, epc: str) -> bool:
        # The item was there all along: each of its misses was a reader miss in that zone.
        for zone, _ in self._misses.pop(epc, ()):
            self._missed_present[zone] += 1
        return self._suspected.pop(epc, None) is not None

    def remove(self, epc: str) -> None:
        """The item left stock legitimately (sold, shipped, destroyed): stop tracking it."""
        self._misses.pop(epc, None)
        self._suspected.pop(epc, None)

    # -- persistence ------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state: counts are days apart, so the daemon stores this between them."""
        return {
            "version": 1,
            "misses": {e: [[z, t] for z, t in m] for e, m in sorted(self._misses.items())},
            "suspected": {e: s.to_dict() for e, s in sorted(self._suspected.items())},
            "hits": dict(sorted(self._hits.items())),
            "missed_present": dict(sorted(self._missed_present.items())),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `to_state` produced; raises ValueError naming the bad entry."""
        if state.get("version") != 1:
            raise ValueError(f"unknown loss tracker state version {state.get('version')!r}")
        try:
            misses = {
                str(e): [(str(z), float(t)) for z, t in m] for e, m in state["misses"].items()
            }
            suspected = {
                str(e): SuspectedLoss(str(d["epc"]), str(d["zone"]), int(d["misses"]),
                                      float(d["confidence"]), float(d["first_missed_at"]),
                                      float(d["suspected_at"]))
                for e, d in state["suspected"].items()
            }
            hits = Counter({str(z): int(n) for z, n in state["hits"].items()})
            missed = Counter({str(z): int(n) for z, n in state["missed_present"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"bad loss tracker state: {exc!r}") from None
        self._misses, self._suspected = misses, suspected
        self._hits, self._missed_present = hits, missed

    # -- outputs ----------------------------------------------------------------------------
    def is_suspected(self, epc: str) -> bool:
        return epc in self._suspected

    def misses(self, epc: str) -> int:
        return len(self._misses.get(epc, ()))

    def suspected(self) -> tuple[SuspectedLoss, ...]:
        """Suspected losses sorted by EPC, confidences at today's read rates."""
        out = []
        for e in sorted(self._suspected):
            s = self._suspected[e]
            out.append(SuspectedLoss(s.epc, s.zone, s.misses, self.confidence(e),
                                     s.first_missed_at, s.suspected_at))
        return tuple(out)


# -- exit ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExitAlert:
    alert_id: str
    epc: str
    zone: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON for rfidd/v1/{site}/alerts."""
        return {"type": "exit_unsold", "alert_id": self.alert_id, "epc": self.epc,
                "zone": self.zone, "at": self.at}

    def to_event(self, read_point: str | None, biz_location: str | None = None) -> ItemEvent:
        """The `entering_exiting` ObjectEvent for the EPCIS feed (disposition `stolen`)."""
        return ItemEvent(
            event_id=stable_event_id(EXIT_BIZ_STEP, self.epc, self.zone, self.at),
            event_time=self.at,
            action=Action.OBSERVE,
            epcs=(self.epc,),
            biz_step=EXIT_BIZ_STEP,
            disposition=EXIT_DISPOSITION,
            read_point=read_point,
            biz_location=biz_location,
            zone=self.zone,
            extensions={"suspected": True, "alert_id": self.alert_id},
        )


class ExitMonitor:
    """Reads in exit zones -> at most one alert per item per `debounce_s`.

    Sold items pass silently; so do tags that `is_ours` rejects (a customer's item from another
    brand). A read timestamped before the last alert (late batch) is inside the window.
    """

    def __init__(
        self,
        exit_zones: Iterable[str],
        *,
        is_sold: Callable[[str], bool],
        is_ours: Callable[[str], bool] | None = None,
        debounce_s: float = 60.0,
        prune_every: int = 10_000,
    ) -> None:
        if debounce_s < 0:
            raise ValueError("debounce_s must be >= 0")
        self.exit_zones = frozenset(exit_zones)
        self.is_sold = is_sold
        self.is_ours = is_ours
        self.debounce_s = debounce_s
        self._last_alert: dict[str, float] = {}
        self._prune_every = prune_every
        self._calls = 0
        self.alerts = 0
        self.suppressed = 0
        self.sold_passed = 0
        self.foreign = 0

    def observe(self, epc: str, zone: str, at: float | None = None) -> ExitAlert | None:
        if zone not in self.exit_zones:
            return None
        t = time.time() if at is None else at
        self._calls += 1
        if self._calls % self._prune_every == 0:
            self.prune(t)
        if self.is_ours is not None and not self.is_ours(epc):
            self.foreign += 1
            return None
        last = self._last_alert.get(epc)
        if last is not None and t - last < self.debounce_s:
            self.suppressed += 1  # checked first: cheap, and a gate reads a tag many times
            return None
        if self.is_sold(epc):
            self.sold_passed += 1
            return None
        self._last_alert[epc] = t
        self.alerts += 1
        return ExitAlert(stable_event_id("exit_alert", epc, zone, t), epc, zone, t)

    def observe_many(self, reads: Iterable[tuple[str, str, float]]) -> list[ExitAlert]:
        out = []
        for epc, zone, at in reads:
            a = self.observe(epc, zone, at)
            if a is not None:
                out.append(a)
        return out

    def decide(self, reads: Iterable[tuple[str, str, float]],
               may_leave: Callable[[str], bool]) -> list[ExitAlert]:
        """The alerts these reads call for, without recording them: the caller commits them,
        then calls `record` (a failed commit retried with the same alerts loses none, and a
        batch that never committed debounces nothing). `may_leave` answers from the books."""
        out: list[ExitAlert] = []
        fresh: dict[str, float] = {}
        for epc, zone, t in reads:
            if zone not in self.exit_zones:
                continue
            if self.is_ours is not None and not self.is_ours(epc):
                continue
            last = fresh.get(epc, self._last_alert.get(epc))
            if last is not None and t - last < self.debounce_s:
                continue
            if may_leave(epc):
                continue
            fresh[epc] = t
            out.append(ExitAlert(stable_event_id("exit_alert", epc, zone, t), epc, zone, t))
        return out

    def record(self, alerts: Iterable[ExitAlert]) -> None:
        """Alerts committed: they open the debounce window of their items."""
        for a in alerts:
            self._calls += 1
            if self._calls % self._prune_every == 0:
                self.prune(a.at)
            prev = self._last_alert.get(a.epc)
            if prev is None or a.at > prev:
                self._last_alert[a.epc] = a.at
            self.alerts += 1

    def prune(self, now: float) -> None:
        """Forget alerts older than the window (keeps memory bounded on a busy exit)."""
        horizon = now - self.debounce_s
        self._last_alert = {e: t for e, t in self._last_alert.items() if t > horizon}


# -- report -------------------------------------------------------------------------------------
DEFINITIONS: dict[str, str] = {
    "confirmed": "an exit alert (an unsold item read leaving through the exit) that staff "
                 "resolved as confirmed_loss",
    "suspected": "an exit alert still open or acknowledged, or an item missed by consecutive "
                 "counts with a confidence above the threshold (not sold since); alerts "
                 "resolved as false_alarm or recovered count as no loss",
    "zone": "the item's home zone: the last stock or floor zone it was in before the exit "
            "(for count suspicions: the zone it was booked in)",
    "value": "catalog retail price in the report currency; cost_value at the catalog cost "
             "where the catalog has one; items without a price are listed as unpriced",
    "net_sales": "retail value of the period's sales minus the retail value of the "
                 "period's customer returns",
    "shrinkage_rate": "lost value (confirmed + suspected, at retail) / net sales; "
                      "confirmed_rate: confirmed value / net sales",
}


@dataclass(frozen=True, slots=True)
class LostItem:
    epc: str
    status: str  # "confirmed" or "suspected" (see DEFINITIONS)
    gtin: str | None
    sku: str | None
    category: str | None
    zone: str | None
    value: Decimal | None  # retail price; None when unknown or in another currency
    confidence: float | None
    source: str = "count"  # "exit" (an exit alert) or "count" (missed by counts)
    cost: Decimal | None = None  # catalog cost, where the catalog has one
    alert_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epc": self.epc, "status": self.status, "source": self.source,
            "alert_id": self.alert_id, "gtin": self.gtin, "sku": self.sku,
            "category": self.category, "zone": self.zone,
            "value": None if self.value is None else str(self.value),
            "cost": None if self.cost is None else str(self.cost),
            "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class Breakdown:
    items: int
    confirmed: int
    suspected: int
    value: Decimal
    confirmed_value: Decimal = Decimal(0)
    suspected_value: Decimal = Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "confirmed": self.confirmed, "suspected": self.suspected,
                "value": str(self.value), "confirmed_value": str(self.confirmed_value),
                "suspected_value": str(self.suspected_value)}


@dataclass(frozen=True, slots=True)
class ShrinkageReport:
    period_start: float
    period_end: float
    currency: str
    sales_value: Decimal  # gross: every sale of the period
    items: tuple[LostItem, ...]
    by_category: Mapping[str, Breakdown]
    by_sku: Mapping[str, Breakdown]
    by_zone: Mapping[str, Breakdown]
    returns_value: Decimal = Decimal(0)
    cleared: tuple[str, ...] = ()  # alert ids resolved as false_alarm or recovered

    def _value(self, status: str | None = None, cost: bool = False) -> Decimal:
        return sum(
            ((i.cost if cost else i.value) or Decimal(0) for i in self.items
             if status is None or i.status == status),
            Decimal(0),
        )

    @property
    def lost_value(self) -> Decimal:
        return self._value()

    @property
    def net_sales(self) -> Decimal:
        return self.sales_value - self.returns_value

    @property
    def shrinkage_rate(self) -> float | None:
        """Lost value / net sales (None without net sales)."""
        net = self.net_sales
        return float(self.lost_value / net) if net > 0 else None

    @property
    def confirmed_rate(self) -> float | None:
        net = self.net_sales
        return float(self._value("confirmed") / net) if net > 0 else None

    def totals(self) -> dict[str, Any]:
        confirmed = sum(1 for i in self.items if i.status == "confirmed")
        return {
            "items": len(self.items),
            "confirmed": confirmed,
            "suspected": len(self.items) - confirmed,
            "unpriced": sum(1 for i in self.items if i.value is None),
            "cleared_alerts": len(self.cleared),
            "value": str(self.lost_value),
            "confirmed_value": str(self._value("confirmed")),
            "suspected_value": str(self._value("suspected")),
            "cost_value": str(self._value(cost=True)),
            "confirmed_cost_value": str(self._value("confirmed", cost=True)),
            "suspected_cost_value": str(self._value("suspected", cost=True)),
            "uncosted": sum(1 for i in self.items if i.cost is None),
            "sales_value": str(self.sales_value),
            "returns_value": str(self.returns_value),
            "net_sales_value": str(self.net_sales),
            "shrinkage_rate": self.shrinkage_rate,
            "confirmed_rate": self.confirmed_rate,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document for rfidd/v1/{site}/reports/shrinkage."""
        def table(m: Mapping[str, Breakdown]) -> dict[str, Any]:
            return {k: v.to_dict() for k, v in sorted(m.items())}

        return {
            "type": "shrinkage",
            "version": REPORT_VERSION,
            "period_start": self.period_start,
            "period_end": self.period_end,
            "currency": self.currency,
            "definitions": DEFINITIONS,
            "totals": self.totals(),
            "by_category": table(self.by_category),
            "by_sku": table(self.by_sku),
            "by_zone": table(self.by_zone),
            "items": [i.to_dict() for i in self.items],
            "cleared_alerts": list(self.cleared),
        }


UNKNOWN = "(unknown)"


def shrinkage_report(
    period_start: float,
    period_end: float,
    *,
    suspected: Iterable[SuspectedLoss],
    exit_alerts: Iterable[ExitAlert],
    sales_value: Decimal,
    currency: str,
    catalog: Mapping[str, Product],
    gtin_of: GtinOf,
    home_zone_of: Callable[[str], str | None] | None = None,
    resolutions: Mapping[str, str | None] | None = None,
    returns_value: Decimal = Decimal(0),
    cost_of: Callable[[str], Decimal | None] | None = None,
) -> ShrinkageReport:
    """Losses in [period_start, period_end) per DEFINITIONS. An item is counted once.

    `resolutions` maps an exit alert's id to its resolution (None: unresolved): unresolved
    alerts are suspected, `confirmed_loss` confirmed, `false_alarm`/`recovered` cleared (and
    they clear the item's count suspicion too). Without it (no alert workflow) every exit
    alert counts as confirmed. Value is the catalog retail price in `currency` (items priced
    in another currency or unknown are unpriced); `cost_of(gtin)` gives the cost where known.
    A confirmed item's zone is its home zone (`home_zone_of`), else the exit zone.
    """
    if sales_value < 0 or returns_value < 0:
        raise ValueError("sales_value and returns_value must be >= 0")
    exits: dict[str, tuple[ExitAlert, str]] = {}
    cleared: list[str] = []
    cleared_epcs: set[str] = set()
    for a in exit_alerts:
        if not period_start <= a.at < period_end or a.epc in exits:
            continue
        if resolutions is None:
            exits[a.epc] = (a, "confirmed")
            continue
        res = resolutions.get(a.alert_id)
        if res in ("false_alarm", "recovered"):
            cleared.append(a.alert_id)
            cleared_epcs.add(a.epc)
            continue
        exits[a.epc] = (a, "confirmed" if res == "confirmed_loss" else "suspected")
    suspects: dict[str, SuspectedLoss] = {}
    for s in suspected:
        if period_start <= s.suspected_at < period_end and s.epc not in exits \
                and s.epc not in cleared_epcs:
            suspects[s.epc] = s

    def item(epc: str, status: str, zone: str | None, conf: float | None, source: str,
             alert_id: str | None = None) -> LostItem:
        g = gtin_of(epc)
        p = catalog.get(g) if g is not None else None
        value = p.price if p is not None and p.currency == currency else None
        cost = cost_of(g) if cost_of is not None and g is not None else None
        return LostItem(epc, status, g, p.sku if p else None, p.category if p else None,
                        zone, value, conf, source, cost, alert_id)

    items: list[LostItem] = []
    for e, (a, status) in exits.items():
        home = home_zone_of(e) if home_zone_of is not None else None
        items.append(item(e, status, home or a.zone, None, "exit", a.alert_id))
    for e, s in suspects.items():
        items.append(item(e, "suspected", s.zone, s.confidence, "count"))
    items.sort(key=lambda i: i.epc)

    def breakdown(key: Callable[[LostItem], str | None]) -> dict[str, Breakdown]:
        acc: dict[str, list[LostItem]] = {}
        for i in items:
            acc.setdefault(key(i) or UNKNOWN, []).append(i)

        def total(v: list[LostItem], status: str | None = None) -> Decimal:
            return sum((i.value for i in v if i.value is not None
                        and (status is None or i.status == status)), Decimal(0))

        return {
            k: Breakdown(
                items=len(v),
                confirmed=sum(1 for i in v if i.status == "confirmed"),
                suspected=sum(1 for i in v if i.status == "suspected"),
                value=total(v), confirmed_value=total(v, "confirmed"),
                suspected_value=total(v, "suspected"),
            )
            for k, v in acc.items()
        }

    return ShrinkageReport(
        period_start=period_start,
        period_end=period_end,
        currency=currency,
        sales_value=sales_value,
        items=tuple(items),
        by_category=breakdown(lambda i: i.category),
        by_sku=breakdown(lambda i: i.sku),
        by_zone=breakdown(lambda i: i.zone),
        returns_value=returns_value,
        cleared=tuple(sorted(cleared)),
    )
