"""HQ storage at scale: monthly partitions (PostgreSQL), eventID dedup through `hq_event_ids`,
MATCH_epc filtered in SQL so pages are full, the upgrade to hq0005_hq_partitions with data in it,
the partial indexes of hq0006,
and `rfidd hq bench` end to end at a smoke size (no figure is compared with anything).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import func, select, text
from waits import wait_until

from rfidd.hq import epcis_query as eq
from rfidd.hq import hq_command, partitions
from rfidd.hq.documents import EventRow, parse_event
from rfidd.hq.store import Batch, HqStore, hq_event_epcs, hq_event_ids, hq_events

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
X = "urn:epc:id:sgtin:0614141.107346.1"


def obj(epcs: list[str], t: datetime, step: str = "receiving",
        eid: str | None = None) -> dict[str, Any]:
    return {"type": "ObjectEvent", "eventID": eid or f"urn:uuid:{uuid.uuid4()}",
            "eventTime": t.isoformat(), "eventTimeZoneOffset": "+00:00", "epcList": epcs,
            "action": "OBSERVE", "bizStep": step, "disposition": "in_progress",
            "readPoint": {"id": "urn:epc:id:sgln:0614141.00777.dock"},
            "bizLocation": {"id": "urn:epc:id:sgln:0614141.00777.0"}}


def packed_in(parent: str, t: datetime) -> dict[str, Any]:
    """X as the carton (parentID): MATCH_anyEPC finds it, MATCH_epc does not."""
    return {"type": "AggregationEvent", "eventID": f"urn:uuid:{uuid.uuid4()}",
            "eventTime": t.isoformat(), "eventTimeZoneOffset": "+00:00", "parentID": parent,
            "childEPCs": ["urn:epc:id:sgtin:0614141.107346.900"], "action": "ADD",
            "bizStep": "packing"}


def transformed(inp: str, t: datetime) -> dict[str, Any]:
    return {"type": "TransformationEvent", "eventID": f"urn:uuid:{uuid.uuid4()}",
            "eventTime": t.isoformat(), "eventTimeZoneOffset": "+00:00",
            "inputEPCList": [inp], "outputEPCList": ["urn:epc:id:sgtin:0614141.107346.901"],
            "bizStep": "repairing"}


def rows(*events: dict[str, Any], site: str = "st-01") -> list[EventRow]:
    return [parse_event(e, site) for e in events]


def count(store: HqStore, table: Any) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def any_store(db_url: str) -> Iterator[HqStore]:
    s = HqStore.open(db_url)
    yield s
    s.dispose()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[HqStore]:
    s = HqStore.open(postgres_url)
    yield s
    s.dispose()


def all_pages(store: HqStore, params: dict[str, list[str]]) -> list[list[str]]:
    pages, token = [], None
    while True:
        p = dict(params)
        if token:
            p["nextPageToken"] = [token]
        evs, token = eq.run(store.engine, eq.parse_query(p))
        pages.append([e["eventID"] for e in evs])
        if token is None:
            return pages


def test_match_epc_pages_are_full_across_a_page_boundary(any_store: HqStore) -> None:
    """Events naming X only as a carton or an input are interleaved with those listing it:
    MATCH_epc must still fill every page but the last, and paging must lose nothing."""
    evs: list[dict[str, Any]] = []
    listing: list[str] = []
    for i in range(7):
        t = T0 + timedelta(minutes=i)
        evs += [packed_in(X, t), transformed(X, t)]
        listed = obj([X, f"urn:epc:id:sgtin:0614141.107346.{100 + i}"], t)
        evs.append(listed)
        listing.append(listed["eventID"])
    for e in evs:  # one batch each: record order is the order above
        any_store.write_batch(Batch(events=rows(e)))
    pages = all_pages(any_store, {"MATCH_epc": [X], "perPage": ["3"]})
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == listing
    anyepc = all_pages(any_store, {"MATCH_anyEPC": [X], "perPage": ["4"]})
    assert [len(p) for p in anyepc] == [4, 4, 4, 4, 4, 1]
    assert sorted(e for p in anyepc for e in p) == sorted(e["eventID"] for e in evs)
    pattern = all_pages(any_store, {"MATCH_epc": ["urn:epc:idpat:sgtin:0614141.107346.*"],
                                    "perPage": ["5"]})
    # the carton's child matches (childEPCs is MATCH_epc's); a transformation's output does not
    assert [e for p in pattern for e in p] == [
        e["eventID"] for e in evs if e["type"] != "TransformationEvent"]


def test_dedup_is_exact_across_months_and_batches(any_store: HqStore) -> None:
    old = obj([X], datetime(2019, 2, 3, tzinfo=UTC))
    new = obj([X], T0)
    r = any_store.write_batch(Batch(events=rows(old, new, old)))
    assert (r.stored, r.duplicates) == (2, 1)
    again = dict(old, eventTime="2019-02-03T01:00:00+01:00")  # same eventID, same instant
    assert any_store.write_batch(Batch(events=rows(again, new))).stored == 0
    assert count(any_store, hq_events) == count(any_store, hq_event_ids) == 2
    assert count(any_store, hq_event_epcs) == 2


def test_an_old_event_gets_its_month_on_demand_and_ahead_months_exist(
        pg_store: HqStore) -> None:
    with pg_store.engine.connect() as c:
        assert partitions.is_partitioned(c)
        before = partitions.existing(c)
    assert (2018, 7) not in before
    assert partitions.month_of(datetime.now(UTC)) in before  # made by the migration
    old = obj([X], datetime(2018, 7, 31, 23, 59, 59, tzinfo=UTC))
    assert pg_store.write_batch(Batch(events=rows(old))).stored == 1
    with pg_store.engine.connect() as c:
        assert (2018, 7) in partitions.existing(c)
        where = c.execute(text("SELECT tableoid::regclass::text FROM hq_events")).scalar()
    assert where == "hq_events_p201807"
    got, _ = eq.run(pg_store.engine, eq.parse_query({"EQ_eventID": [old["eventID"]]}))
    assert [e["eventID"] for e in got] == [old["eventID"]]
    # the scheduled job: a year from now, the next months are made, the existing ones kept
    later = datetime.now(UTC) + timedelta(days=400)
    made = partitions.ensure_ahead(pg_store.engine, later, ahead=2)
    assert made == [partitions.add_months(partitions.month_of(later), k) for k in range(3)]
    assert partitions.ensure_ahead(pg_store.engine, later, ahead=2) == []


def test_partition_keeper_runs_at_start_and_stops(pg_store: HqStore) -> None:
    with pg_store.engine.begin() as c:
        for m in partitions.existing(c):
            if m > partitions.month_of(datetime.now(UTC)):
                c.execute(text(f"DROP TABLE {partitions.partition_name(m)}"))
    keeper = partitions.PartitionKeeper(pg_store.engine, ahead=2, interval_s=3600)
    keeper.start()
    try:
        wait_until(lambda: keeper.runs >= 1, "the keeper ran once")
    finally:
        keeper.stop()
    with pg_store.engine.connect() as c:
        have = partitions.existing(c)
    now = partitions.month_of(datetime.now(UTC))
    assert {partitions.add_months(now, k) for k in range(3)} <= have


def test_two_writers_racing_on_the_same_events_store_each_once(pg_store: HqStore) -> None:
    evs = [obj([f"urn:epc:id:sgtin:0614141.107346.{i}"], T0 + timedelta(days=i * 10))
           for i in range(300)]
    results: list[int] = []
    start = threading.Barrier(4)

    def writer(k: int) -> None:
        mine = rows(*(evs[k * 50:] + evs[:k * 50]))  # overlapping, different orders
        start.wait()
        results.append(sum(pg_store.write_batch(Batch(events=mine[i:i + 100])).stored
                           for i in range(0, len(mine), 100)))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(results) == 300
    assert count(pg_store, hq_events) == count(pg_store, hq_event_ids) == 300


def _old_schema_rows(store: HqStore) -> list[dict[str, Any]]:
    """Rows as the previous revision held them (inserted by SQL: today's writer no longer
    fits)."""
    out = []
    for i, e in enumerate([obj([X], T0 - timedelta(days=40)), packed_in(X, T0),
                           obj([X, "urn:epc:id:sgtin:0614141.107346.2"], T0 + timedelta(days=1)),
                           transformed(X, datetime(2021, 5, 5, tzinfo=UTC))]):
        r = parse_event(e, "st-01")
        out.append({"event_id": r.event_id, "site": "st-01", "type": r.type,
                    "event_time": r.event_time, "biz_step": r.biz_step, "raw": e,
                    "received_at": T0 + timedelta(seconds=i), "seq": i + 1, "epcs": r.epcs})
    return out


def test_upgrade_from_the_previous_revision_keeps_the_events_and_their_ids(db_url: str) -> None:
    s = HqStore.open(db_url, migrate=False)
    try:
        s.upgrade("hq0004_subscriptions")
        old = _old_schema_rows(s)
        old_epcs = sa.table("hq_event_epcs", sa.column("event_id"), sa.column("epc"),
                            sa.column("event_time", sa.DateTime(timezone=True)))
        with s.engine.begin() as c:
            for r in old:
                c.execute(hq_events.insert().values(
                    {k: v for k, v in r.items() if k != "epcs"}))
                c.execute(old_epcs.insert(), [
                    {"event_id": r["event_id"], "epc": x, "event_time": r["event_time"]}
                    for x in r["epcs"]])
            ids_before = dict(c.execute(text("SELECT event_id, id FROM hq_events")).all())
        s.upgrade()
        assert s.current_revision() == "hq0006_hq_index_costs"
        with s.engine.connect() as c:
            assert dict(c.execute(text("SELECT event_id, id FROM hq_events")).all()) \
                == ids_before
            assert count(s, hq_event_ids) == 4
            if s.dialect == "postgresql":
                assert partitions.is_partitioned(c)
                assert {(2021, 5), (2026, 1), (2026, 3)} <= partitions.existing(c)
        listing = [r["event_id"] for r in old if r["type"] == "ObjectEvent"]
        assert [e for p in all_pages(s, {"MATCH_epc": [X], "perPage": ["1"]}) for e in p] \
            == listing
        assert len([e for p in all_pages(s, {"MATCH_anyEPC": [X]}) for e in p]) == 4
        # dedup holds across the upgrade: the old events again are duplicates; a new one gets
        # an id after the old ones (record order, and so nextPageToken, carry on)
        again = rows(*(r["raw"] for r in old))
        fresh = obj([X], T0 + timedelta(days=2))
        res = s.write_batch(Batch(events=[*again, *rows(fresh)]))
        assert (res.stored, res.duplicates) == (1, 4)
        with s.engine.connect() as c:
            new_id = c.execute(select(hq_events.c.id)
                               .where(hq_events.c.event_id == fresh["eventID"])).scalar()
        assert new_id is not None and new_id > max(ids_before.values())
        if s.dialect == "postgresql":  # and back: the plain table, the same rows
            from alembic import command

            from rfidd.hq.store import alembic_config

            cfg = alembic_config()
            with s.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "hq0004_subscriptions")
            with s.engine.connect() as c:
                assert not partitions.is_partitioned(c)  # this schema's hq_events
                assert c.execute(text("SELECT count(*) FROM hq_events")).scalar() == 5
    finally:
        s.dispose()


def test_record_time_paging_is_exact_across_pages(any_store: HqStore) -> None:
    """GE_recordTime pages in (recordTime, id) order: every event once, in arrival order,
    also when the batches' recordTimes do not follow their ids."""
    base = datetime(2026, 11, 1, tzinfo=UTC)
    order: list[tuple[datetime, str]] = []
    for k, minutes in enumerate([5, 1, 3, 0, 4, 2]):  # arrival clocks out of id order
        evs = [obj([f"urn:epc:id:sgtin:0614141.107346.{k * 10 + i}"], T0) for i in range(3)]
        at = base + timedelta(minutes=minutes)
        any_store.write_batch(Batch(events=rows(*evs), received_at=at))
        order += [(at, e["eventID"]) for e in sorted(evs, key=lambda e: e["eventID"])]
    since = {"GE_recordTime": [(base + timedelta(minutes=1)).isoformat()], "perPage": ["4"]}
    pages = all_pages(any_store, since)
    want = [eid for at, eid in sorted(order) if at >= base + timedelta(minutes=1)]
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert [e for p in pages for e in p] == want
    _evs, token = eq.run(any_store.engine, eq.parse_query(since))
    assert token is not None
    with pytest.raises(eq.QueryParameterError, match="another query"):
        eq.parse_query({"nextPageToken": [token]})  # an id-order query cannot use it


OUR_INDEXES = ("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
               "AND tablename IN ('hq_events', 'hq_event_epcs')")


def test_hq_bench_runs_end_to_end_with_the_bulk_loader(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rfidd.hq import bench_load

    monkeypatch.setattr(bench_load, "REBUILD_FROM", 1000)  # the drop-and-rebuild path too
    s = HqStore.open(postgres_url)
    with s.engine.connect() as c:
        indexes = sorted(c.execute(text(OUR_INDEXES)).scalars())
    s.dispose()
    res = CliRunner().invoke(hq_command, [
        "bench", "--database-url", postgres_url, "--events", "3000", "--real-events", "1000",
        "--queries", "10", "--replay-events", "1000", "--sites", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["events"] == 3000 and out["bulk_events"] == 2000 and out["stored_events"] == 1000
    assert set(out["queries_ms"]) == {
        "MATCH_epc", "MATCH_epc of an idpat (perPage 100)",
        "EQ_bizStep + one-day eventTime window (perPage 100)", "EQ_eventID",
        "EQ_bizLocation (perPage 100)",
        "GE_recordTime, next page by nextPageToken (perPage 100)"}
    s = HqStore.open(postgres_url)
    try:
        assert count(s, hq_events) == count(s, hq_event_ids) == count(s, hq_event_epcs) == 3000
        with s.engine.connect() as c:  # the loader's rows are the writer's: sequences complete
            marks = c.execute(text("SELECT site, contiguous_seq FROM hq_sites ORDER BY site"))
            assert [m for _s, m in marks] == [1000, 1000, 1000]
            assert sorted(c.execute(text(OUR_INDEXES)).scalars()) == indexes
            # and built: valid, on every month's partition, used by the queries
            assert not c.execute(text("SELECT count(*) FROM pg_index WHERE NOT indisvalid "
                                      "AND pg_table_is_visible(indexrelid)")).scalar()
            per_partition = c.execute(text(
                "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid "
                "WHERE i.inhparent = 'hq_events'::regclass GROUP BY i.inhrelid")).scalars()
            n_parent = c.execute(text("SELECT count(*) FROM pg_index "
                                      "WHERE indrelid = 'hq_events'::regclass")).scalar()
            assert set(per_partition) == {n_parent}
    finally:
        s.dispose()


def _plan(store: HqStore, stmt: Any) -> str:
    sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.begin() as c:
        if store.dialect == "postgresql":
            c.execute(text("SET LOCAL enable_seqscan = off"))
            return "\n".join(c.execute(text(f"EXPLAIN {sql}")).scalars())
        return "\n".join(str(r[-1]) for r in c.execute(text(f"EXPLAIN QUERY PLAN {sql}")))


def test_partial_indexes_leave_out_empty_values_and_still_serve_the_queries(
        any_store: HqStore) -> None:
    """hq0006: the sequence walk and EQ_bizLocation read their partial indexes (the queries'
    conditions imply the predicate), and the indexes are partial in the database."""
    captured = obj([X], T0)
    del captured["bizLocation"]
    evs = rows(captured, obj([X], T0))
    evs[1] = dataclasses.replace(evs[1], seq=1)  # a site's event: seq and bizLocation
    any_store.write_batch(Batch(events=evs))
    walk = (select(hq_events.c.seq).where(hq_events.c.site == "st-01", hq_events.c.seq > 0)
            .order_by(hq_events.c.seq))
    assert "site_seq" in _plan(any_store, walk)
    by_location = eq.statement(eq.parse_query(
        {"EQ_bizLocation": ["urn:epc:id:sgln:0614141.00777.0"]}))
    assert "location_id" in _plan(any_store, by_location)
    with any_store.engine.connect() as c:
        if any_store.dialect == "postgresql":
            defs = c.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                  "WHERE tablename = 'hq_events'")).all()
        else:
            defs = c.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                  "AND tbl_name = 'hq_events'")).all()
    where = {n: d for n, d in defs if n in ("ix_hq_events_site_seq", "ix_hq_events_location_id")}
    assert "seq IS NOT NULL" in where["ix_hq_events_site_seq"]
    assert "biz_location IS NOT NULL" in where["ix_hq_events_location_id"]
    assert eq.run(any_store.engine, eq.parse_query(
        {"EQ_bizLocation": ["urn:epc:id:sgln:0614141.00777.0"]}))[0][0]["eventID"] \
        == evs[1].event_id


def test_identifiers_compare_as_bytes_in_every_partition(pg_store: HqStore) -> None:
    """hq0006: eventIDs, EPCs and the other identifiers are "C" collation, in the partitions
    made ahead and in one made on demand (an old month) too; an idpat still matches."""
    old = obj([X], datetime(2018, 5, 6, tzinfo=UTC))
    pg_store.write_batch(Batch(events=rows(old)))
    with pg_store.engine.connect() as c:
        got = c.execute(text(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name IN ('event_id', 'epc', "
            "'site', 'biz_step', 'read_point', 'biz_location') AND (table_name LIKE 'hq_event%')"
        )).all()
    tables = {t for t, _c, _k in got}
    assert {"hq_events", "hq_event_ids", "hq_event_epcs", "hq_events_p201805"} <= tables
    assert {k for _t, _c, k in got} == {"C"}, got
    evs, _ = eq.run(pg_store.engine, eq.parse_query(
        {"MATCH_epc": ["urn:epc:idpat:sgtin:0614141.107346.*"]}))
    assert [e["eventID"] for e in evs] == [old["eventID"]]
