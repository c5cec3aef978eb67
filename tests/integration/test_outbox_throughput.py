"""Throughput of the outbox: rows committed per second (SQLite, PostgreSQL) and rows published
to the broker per second. The figures are printed (run with -s), never asserted: the machine's
speed is not a property of the code. What is asserted is that every row arrived."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from inventory.events import stable_event_id
from rfidd.benchmark.parts import drain_outbox
from rfidd.config import MqttConfig
from rfidd.store import EventRecord, ItemUpsert, apply_batch, open_database, outbox_stats

pytestmark = pytest.mark.integration

ROWS = 10_000
BATCH = 500


def _batch(tag: str, start: int) -> tuple[list[ItemUpsert], list[EventRecord]]:
    items, events = [], []
    for i in range(start, start + BATCH):
        epc = f"3034257BF7194E40{i:08X}"
        eid = stable_event_id("bench", tag, i)
        items.append(ItemUpsert(epc, seen_at=1000.0 + i, zone="floor"))
        events.append(EventRecord(eid, 1000.0 + i, {
            "eventID": eid, "type": "ObjectEvent", "action": "OBSERVE", "epcList": [epc],
            "bizStep": "storing", "readPoint": {"id": "urn:epc:id:sgln:0614141.00777.floor"},
        }, action="OBSERVE", biz_step="storing", zone="floor", epc_count=1))
    return items, events


def test_commit_throughput(db_url: str) -> None:
    db = open_database(db_url)
    tag = uuid.uuid4().hex
    try:
        t0 = time.perf_counter()
        for start in range(0, ROWS, BATCH):
            items, events = _batch(tag, start)
            with db.write() as s:
                r = apply_batch(s, items, events)
            assert r.events == BATCH
        dt = time.perf_counter() - t0
        with db.session() as s:
            assert outbox_stats(s)[0] == ROWS
        print(f"\n[{db.dialect}] committed {ROWS} events (+{ROWS} items, {ROWS} outbox rows) in "
              f"{BATCH}-row batches: {ROWS / dt:,.0f} events/s, {dt / (ROWS / BATCH) * 1000:.1f} "
              f"ms per batch")
    finally:
        db.dispose()


@pytest.mark.parametrize("per_doc", [1, 200])
def test_publish_throughput(
    per_doc: int, mqtt_broker: Any, sqlite_url: str, mqtt_collector: Any
) -> None:
    db = open_database(sqlite_url)
    tag = uuid.uuid4().hex
    rows = 2_000 if per_doc == 1 else ROWS
    for start in range(0, rows, BATCH):
        with db.write() as s:
            apply_batch(s, events=_batch(tag, start)[1])
    proto = "5" if mqtt_broker.supports_v5 else "3.1.1"
    site = f"t{uuid.uuid4().hex[:10]}"
    cfg = MqttConfig.model_validate({
        "url": f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}", "protocol": proto,
        "client_id": f"rfidd-bench-{site}", "max_events_per_document": per_doc,
    })
    col = mqtt_collector(mqtt_broker, f"rfidd/v1/{site}/epcis", protocol=proto)
    try:
        dt, messages = drain_outbox(db, cfg, site)
        got = col.wait_for(
            lambda ms: sum(len(json.loads(m.payload)["epcisBody"]["eventList"]) for m in ms)
            >= rows, timeout=30)
        ids = [e["eventID"] for m in got for e in json.loads(m.payload)["epcisBody"]["eventList"]]
        assert len(set(ids)) == rows
        print(f"\n[mqtt {proto}, {per_doc} event(s)/document, window 100] {rows} rows acked and "
              f"marked sent in {dt:.2f} s: {rows / dt:,.0f} rows/s, "
              f"{messages / dt:,.0f} messages/s")
    finally:
        db.dispose()
