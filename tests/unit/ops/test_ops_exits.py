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


def test_registers_a_change_hook_and_an_exit_read_hook(ctx: ServiceContext,
                                                       exits: ExitService) -> None:
    assert ctx.change_hooks == [exits._on_changes]
    assert [zones for zones, _ in ctx.read_hooks] == [frozenset({"exit"})]


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
    hook(ctx, arrive(thief, "exit", 1100.0))  # outside the 60 s window: a new alert
    assert len(outbox(ctx, "alerts")) == 2
    report = exits.shrinkage(0, 2000)
    assert report.totals()["confirmed"] == 1 and str(report.lost_value) == "3400.00"
    with pytest.raises(OpsError, match="until"):
        exits.shrinkage(10, 10)


def test_may_leave_from_the_books_silences_the_exit(ctx: ServiceContext,
                                                    exits: ExitService) -> None:
    lent, other = epc(BAG, 20), epc(BAG, 21)
    exits.may_leave = lambda e: e == lent  # what app.py plugs in from the lifecycle
    hook(ctx, arrive(lent, "exit"), arrive(other, "exit"))
    assert [a["epc"] for a in outbox(ctx, "alerts")] == [other]


def test_hook_errors_never_reach_the_ingest_thread(ctx: ServiceContext, exits: ExitService,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_s: Any, _reads: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(exits, "_on_exit", boom)
    with pytest.raises(RuntimeError):  # the ingest catches it and rolls back the savepoint
        hook(ctx, arrive(epc(BAG, 1), "exit"))
    assert exits.hook_errors == 1


def test_restart_keeps_the_loss_state(ctx: ServiceContext, catalog: CatalogService,
                                      exits: ExitService) -> None:
    e1 = epc(BAG, 1)
    exits.loss._misses[e1] = [("stockroom", 1.0)]
    exits.stop()
    again = ExitService(ctx, catalog)
    again.start()
    assert again.loss.misses(e1) == 1
    assert again.suspected() == {"suspected": [], "read_rates": {}}
