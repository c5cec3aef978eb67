"""ExitService: exit alerts staged in the ingest transaction, the loss tracker's state, and the
shrinkage report."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opskit import BAG, arrive, epc, hook, outbox
from sqlalchemy import select

from inventory.epc import decode
from inventory.presence import ChangeKind, PresenceChange
from rfidd.context import ServiceContext
from rfidd.ops import CatalogService, ExitService, OpsError
from rfidd.store import repo
from rfidd.store.models import Event, Item


def test_watches_every_read_of_the_exit_zones(exits: ExitService) -> None:
    assert exits.name == "exits" and exits.watched_zones == frozenset({"exit"})


def test_exit_alert_once_per_item_sold_items_silent(ctx: ServiceContext,
                                                    exits: ExitService) -> None:
    thief, sold = epc(BAG, 7), epc(BAG, 8)
    with ctx.db.write() as s:
        repo.upsert_items(s, [repo.ItemUpsert(thief, 900.0, "floor"),
                              repo.ItemUpsert(sold, 900.0, "floor", disposition="retail_sold")],
                          900.0)
    hook(ctx, arrive(thief, "exit", 1000.0), arrive(sold, "exit", 1000.0))
    hook(ctx, PresenceChange(ChangeKind.MOVED, thief, "exit", "floor", 1010.0))  # debounced
    alerts = outbox(ctx, "alerts")
    assert [(a["epc"], a["type"], a["name"]) for a in alerts] == [
        (thief, "exit_unsold", "Sac Céleste")]
    with ctx.db.session() as s:
        ev = s.scalars(select(Event).where(Event.biz_step == "entering_exiting")).one()
        assert ev.disposition == "stolen" and json.loads(ev.payload)["epcList"] == [
            decode(thief).uri]
        assert s.get(Item, thief).disposition == "stolen"  # type: ignore[union-attr]
    # Outside the 60 s window: the books now say missing (stolen, alerted), and the alert stays
    # the one open for it.
    hook(ctx, arrive(thief, "exit", 1100.0))
    assert len(outbox(ctx, "alerts")) == 1
    report = exits.shrinkage(0, 2000)
    assert report.totals()["confirmed"] == 1 and str(report.lost_value) == "3400.00"
    with pytest.raises(OpsError, match="until"):
        exits.shrinkage(10, 10)


def test_the_books_in_the_batch_view_silence_the_exit(ctx: ServiceContext,
                                                       exits: ExitService) -> None:
    lent, other = epc(BAG, 20), epc(BAG, 21)
    with ctx.db.write() as s:  # on loan in the books: it may leave
        repo.upsert_items(s, [repo.ItemUpsert(lent, 900.0, "floor", disposition="in_transit")],
                          900.0)
    hook(ctx, arrive(lent, "exit"), arrive(other, "exit"))
    assert [a["epc"] for a in outbox(ctx, "alerts")] == [other]


def test_an_exit_read_is_handled_once(ctx: ServiceContext, exits: ExitService) -> None:
    """The arrival at the gate and its read are one fact: one decision, one alert."""
    thief = epc(BAG, 30)
    hook(ctx, arrive(thief, "exit", 1000.0))
    assert len(outbox(ctx, "alerts")) == 1
    assert exits.exit_monitor.alerts == 1 and exits.exit_monitor.suppressed == 0


def test_a_failing_exit_plan_never_reaches_the_ingest_thread(
        ctx: ServiceContext, exits: ExitService, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(exits.exit_monitor, "decide", boom)
    hook(ctx, arrive(epc(BAG, 1), "exit"))  # the ingest counts it and commits the rest
    assert outbox(ctx, "alerts") == []
    assert ctx.metrics.registry.get_sample_value(
        "rfidd_ingest_component_errors_total", {"component": "exits"}) == 1


def test_restart_keeps_the_loss_state(ctx: ServiceContext, catalog: CatalogService,
                                      exits: ExitService) -> None:
    e1 = epc(BAG, 1)
    exits.loss._misses[e1] = [("stockroom", 1.0)]
    exits.stop()
    again = ExitService(ctx, catalog)
    again.start()
    assert again.loss.misses(e1) == 1
    assert again.suspected() == {"suspected": [], "read_rates": {}}
