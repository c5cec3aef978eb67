"""build_ops (rfidd/app.py): the store-operations services wired on one context, and the helpers
the HTTP routes share."""

from __future__ import annotations

import json
import logging
import time

import pytest
from opskit import BAG, arrive, asn, epc, feed, hook
from waits import wait_until

from inventory.epc import decode
from rfidd.app import build_ops
from rfidd.context import ServiceContext
from rfidd.ops import OpsSettings
from rfidd.ops.api import parse_time
from rfidd.ops.store import gtin_of_uri
from rfidd.web.errors import ApiError


def test_registers_components_and_commands(ctx: ServiceContext) -> None:
    ops = build_ops(ctx, OpsSettings())
    assert set(ctx.command_handlers) == {"asn", "catalog"}
    assert ops.components() == (ops.reception, ops.exits)
    assert [c.watched_zones for c in ops.components()] == [frozenset(), frozenset({"exit"})]


def test_the_ops_tick_stops_timed_counts_and_applies_reception_rules(
    ctx: ServiceContext
) -> None:
    ops = build_ops(ctx, OpsSettings())
    feed(ctx, *ops.components())
    ops.start()
    listed = [epc(BAG, 1)]
    sid = ops.reception.import_asn_text(json.dumps(asn("T-1", listed)), "json",
                                        "t")["reception"]
    hook(ctx, arrive(listed[0], "reception"))
    cid = ops.counting.start_count(["floor"], duration_s=0.01)["session_id"]
    # Complete and quiet for auto_close_complete_s: back-date the last new read.
    ops.reception._reception.last_new_read -= 3600  # type: ignore[union-attr]

    def ticked() -> bool:
        ops.schedules.tick()
        return ops.counting.count(cid)["status"] == "finished"

    wait_until(ticked, "the timed stop of the count by the ops tick")
    assert ops.reception.reception(sid)["status"] == "closed"
    ops.stop()


def test_a_database_outage_during_the_ops_tick_is_skipped_counted_logged_once_then_resumed(
    ctx: ServiceContext, caplog: pytest.LogCaptureFixture
) -> None:
    ops = build_ops(ctx, OpsSettings())
    feed(ctx, *ops.components())
    ops.start()
    listed = [epc(BAG, 1)]
    sid = ops.reception.import_asn_text(json.dumps(asn("T-2", listed)), "json",
                                        "t")["reception"]
    hook(ctx, arrive(listed[0], "reception"))
    cid = ops.counting.start_count(["floor"], duration_s=0.01)["session_id"]
    ops.reception._reception.last_new_read -= 3600  # type: ignore[union-attr]
    ends_at = ops.counting.count(cid)["ends_at"]
    wait_until(lambda: time.time() >= ends_at, "the count's end time passed")
    skipped = ctx.metrics.ops_ticks_skipped
    ctx.health.failed("connection refused (the test's outage)")
    with caplog.at_level(logging.INFO, logger="rfidd.ops"):
        for _ in range(3):
            ops.schedules.tick()  # no traceback: skipped
        assert skipped._value.get() == 3
        warned = [r for r in caplog.records if r.levelno == logging.WARNING
                  and "ops tick skipped" in r.getMessage()]
        assert len(warned) == 1 and "connection refused" in warned[0].getMessage()
        assert ops.counting.count(cid)["status"] == "running"  # still due, nothing lost
        assert ops.reception.reception(sid)["status"] != "closed"
        ctx.health.recovered()
        ops.schedules.tick()
    assert ops.counting.count(cid)["status"] == "finished"
    assert ops.reception.reception(sid)["status"] == "closed"
    assert skipped._value.get() == 3
    assert any("after 3 skipped" in r.getMessage() for r in caplog.records)
    ops.stop()


def test_gtin_of_uri_and_parse_time() -> None:
    assert gtin_of_uri(decode(epc(BAG, 5)).uri or "") == BAG
    assert gtin_of_uri("urn:epc:id:sscc:3760001.0000000001") is None
    assert parse_time("2024-01-01T00:00:00Z", "since") == 1704067200.0
    assert parse_time(12.5, "since") == 12.5
    with pytest.raises(ApiError, match="until"):
        parse_time("2024-01-01T00:00:00", "until")
