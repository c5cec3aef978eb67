"""Store operations asking the lifecycle books (rfidd.lifecycle): the link between what the
readers see and what the store holds.

When the daemon runs the lifecycle service (app.py hands it to the ops modules as `books`),
counts expect sellable stock on the books only (client holds, pick-ups, returns, repairs are
their own sections; items never received are not on the books until taken over), a closed
count books what it found, exit alerts enter the alert workflow with the item's home zone,
shrinkage follows resolutions and net sales, and replenishment counts sellable stock only.
Without it (a bare StoreOps), operations behave as the presence tables alone say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.catalog import Product
from rfidd.lifecycle.alerts import AlertWorkflow
from rfidd.lifecycle.counts import SELLABLE, BookedCount, CountChunk
from rfidd.lifecycle.models import LifecycleItem
from rfidd.ops import store
from rfidd.ops.models import OpsCountSession

if TYPE_CHECKING:
    from rfidd.lifecycle.service import LifecycleService

_SELLABLE_DISPOSITIONS = ("sellable_accessible", "sellable_not_accessible", "available")


def count_book(books: LifecycleService | None, s: Session, book: dict[str, str]
               ) -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
    """(the book a count expects, the set-aside items reported in their own sections)."""
    if books is None:
        return book, {}
    aside = books.counts.set_aside(s)
    statuses = {e: st for e, st in s.execute(select(LifecycleItem.epc, LifecycleItem.status))}
    unbooked = [e for e in book if e not in statuses]
    dispositions = store.dispositions(s, unbooked) if unbooked else {}
    sellable = {x.value for x in SELLABLE}
    kept = {e: z for e, z in book.items()
            if e not in aside and (statuses[e] in sellable if e in statuses
                                   else dispositions.get(e) in _SELLABLE_DISPOSITIONS)}
    return kept, aside


def first_count_adopts(books: LifecycleService | None, s: Session) -> bool:
    """The go-live option: no count has finished here yet, and the site asks for it."""
    if books is None or not books.ctx.config.counts.first_count_takes_over:
        return False
    done = s.scalar(select(OpsCountSession.id).where(OpsCountSession.status == "finished")
                    .limit(1))
    return done is None


def plan_chunk(books: LifecycleService, s: Session, count_id: str,
               counted: Mapping[str, str], *, adopt: bool, at: float) -> CountChunk:
    """A chunk of a closed count planned on the books as they are (read-only, no lock)."""
    return books.counts.plan_count(s, count_id, counted, adopt=adopt, at=at)


def book_chunk(books: LifecycleService, s: Session, count_id: str, counted: Mapping[str, str],
               *, adopt: bool, at: float, out: BookedCount,
               planned: CountChunk | None = None) -> None:
    """Apply a chunk of a closed count to the books in the caller's transaction: one EPCIS
    event per item counted; `out` adds up the report's `books` section. `planned` is
    written as is if the books did not change since it was planned."""
    books.counts.book_count(s, count_id, counted, adopt=adopt, at=at, out=out,
                            planned=planned)


def record_exit(books: LifecycleService | None, s: Session, alert_id: str, epc: str,
                zone: str, at: float, detail: dict[str, Any]) -> tuple[str | None, bool]:
    """(home zone, mark the item stolen) for an exit alert; without books: (None, True), the
    alert still kept in the workflow's table (what the shrinkage report reads)."""
    if books is None:
        AlertWorkflow.raise_alert(s, alert_id, store.EXIT_ALERT_KIND, epc, zone, at,
                                  detail=detail)
        return None, True
    return books.record_exit(s, alert_id, epc, zone, at, detail)


@dataclass(frozen=True, slots=True)
class ShrinkageInputs:
    resolutions: Mapping[str, str | None] | None
    home_zones: Mapping[str, str | None]  # by alert id
    returns_value: Decimal
    cost_of: Callable[[str], Decimal | None]


def shrinkage_inputs(books: LifecycleService | None, s: Session, alert_ids: Sequence[str],
                     start: float, end: float, catalog: Mapping[str, Product],
                     currency: str) -> ShrinkageInputs:
    returns, _ = store.returns_value(s, start, end, catalog, currency)

    def cost_of(gtin: str) -> Decimal | None:
        p = catalog.get(gtin)
        return p.cost if p is not None and p.currency == currency else None

    if books is None:
        return ShrinkageInputs(None, {}, returns, cost_of)
    res = AlertWorkflow.resolutions(s, alert_ids)
    homes = AlertWorkflow.home_zones(s, alert_ids)
    return ShrinkageInputs({a: res.get(a) for a in alert_ids}, homes, returns, cost_of)


def sellable(books: LifecycleService | None, s: Session, epcs: Sequence[str]
             ) -> tuple[Callable[[str], bool] | None, set[str]]:
    """For replenishment: (is this piece sellable stock on the books, as a count expects it
    (None: no books, every piece is); the pieces not on the books, to check)."""
    if books is None:
        return None, set()
    ok, unbooked = books.counts.shelf_stock(s, sorted(set(epcs)))
    return ok.__contains__, unbooked
