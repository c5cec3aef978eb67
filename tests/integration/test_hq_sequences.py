"""HQ's sequence bookkeeping on SQLite and PostgreSQL: contiguous mark, gaps, the repairer's
requests and alerts, the site registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from rfidd.hq.documents import EventRow
from rfidd.hq.gaps import GapRepairer, site_sequences
from rfidd.hq.registry import register_site, registered_sites
from rfidd.hq.skips import parse_skips
from rfidd.hq.store import (
    Batch,
    HqStore,
    SiteMessageRow,
    hq_site_messages,
    hq_sites,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Iterator[HqStore]:
    s = HqStore.open(db_url, known_sites_only=True)
    register_site(s.engine, "st", "Paris", T0)
    yield s
    s.dispose()


def row(site: str, seq: int | None, n: int | None = None) -> EventRow:
    k = seq if n is None else n
    return EventRow(f"urn:uuid:{site}-{k}", site, "ObjectEvent", T0 + timedelta(seconds=k),
                    "OBSERVE", None, None, None, None, None, {"n": k}, (f"urn:epc:x:{k}",),
                    seq=seq)


def put(store: HqStore, seqs: list[int], head: int | None = None, site: str = "st") -> Any:
    b = Batch(events=[row(site, s) for s in seqs])
    if head is not None:
        b.heads[site] = head
    return store.write_batch(b)


def test_contiguous_mark_and_gaps(store: HqStore) -> None:
    put(store, [1, 2, 3, 6, 7, 10], head=12)
    (s,) = site_sequences(store.engine, ["st"])
    assert (s.contiguous, s.published_through) == (3, 12)
    assert s.gaps == ((4, 5), (8, 9), (11, 12)) and s.missing == 6
    put(store, [4, 5, 5])  # a duplicate copy changes nothing
    (s,) = site_sequences(store.engine, ["st"])
    assert s.contiguous == 7 and s.gaps == ((8, 9), (11, 12))
    put(store, [], head=9)  # an older head never moves it back
    put(store, [8, 9, 11, 12])
    (s,) = site_sequences(store.engine, ["st"])
    assert (s.contiguous, s.gaps, s.published_through) == (12, (), 12)


def test_contiguous_walk_crosses_blocks_and_duplicate_numbers(
        store: HqStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk reads blocks of `WALK` numbers: a run longer than a block, a number held
    twice (two eventIDs, the same seq) and a gap right after a block's end are all exact."""
    import rfidd.hq.marks as marks

    monkeypatch.setattr(marks, "WALK", 3)
    b = Batch(events=[row("st", s) for s in (1, 2, 3, 4, 5, 6, 7, 9, 10)]
              + [row("st", 4, n=104), row("st", 6, n=106)])
    store.write_batch(b)
    (s,) = site_sequences(store.engine, ["st"])
    assert s.contiguous == 7
    put(store, [8])
    (s,) = site_sequences(store.engine, ["st"])
    assert s.contiguous == 10


def test_marks_of_several_sites_in_one_batch(
        store: HqStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch holds several sites' messages: each site's mark moves by its own numbers
    (one walk statement for all of them), across blocks and over its own declared skip."""
    import rfidd.hq.marks as marks

    monkeypatch.setattr(marks, "WALK", 2)
    register_site(store.engine, "nd", "Lyon", T0)
    skip = parse_skips("nd", [[4, 5, "restore", None]], T0)
    b = Batch(events=[row("st", s) for s in (1, 2, 3, 4, 5, 7)]
              + [row("nd", s) for s in (1, 2, 6, 7)], site_messages=skip)
    store.write_batch(b)
    marks = {s.site: s.contiguous for s in site_sequences(store.engine, ["st", "nd"])}
    assert marks == {"st": 5, "nd": 2}  # nd: 3 missing, the skip starts after it
    store.write_batch(Batch(events=[row("st", 6), row("nd", 3)]))
    marks = {s.site: s.contiguous for s in site_sequences(store.engine, ["st", "nd"])}
    assert marks == {"st": 7, "nd": 7}  # nd: 3, then over 4-5, then 6, 7


def test_numbered_events_of_a_site_never_seen_keep_its_mark(db_url: str) -> None:
    """A batch with numbered events and no `seen` (a capture carrying rfidd:seq) makes the
    site's row, so the mark is kept and the next batch walks on from it, not from 0."""
    s = HqStore.open(db_url)
    try:
        s.write_batch(Batch(events=[row("cap", n) for n in (1, 2, 3)], trusted=True))
        with s.engine.connect() as c:
            mark = c.execute(select(hq_sites.c.contiguous_seq)
                             .where(hq_sites.c.site == "cap")).scalar()
        assert mark == 3
        s.write_batch(Batch(events=[row("cap", n) for n in (4, 5)], trusted=True))
        (seq,) = site_sequences(s.engine, ["cap"])
        assert seq.contiguous == 5
    finally:
        s.dispose()


def test_a_skip_over_numbers_hq_lacks_is_counted_lost_once(store: HqStore) -> None:
    """sequence_lost: the numbers used before a restore (up to used_through) that HQ never got
    come back in BatchResult.lost (the consumer's rfidd_hq_sequence_lost_total), once."""
    from rfidd.hq.consumer import HqMetrics
    from rfidd.hq.skips import parse_skips

    assert HqMetrics().registry.get_sample_value("rfidd_hq_sequence_lost_total") == 0.0
    put(store, [1, 2, 3, 7])
    skip = parse_skips("st", [[4, 10, "restored", 8]], T0)
    assert store.write_batch(Batch(site_messages=skip)).lost == 4  # 4-6 and 8; 9-10 unused
    assert store.write_batch(Batch(site_messages=skip)).lost == 0  # known: not again


def test_nothing_received_is_one_gap_up_to_the_head(store: HqStore) -> None:
    put(store, [], head=3000)
    (s,) = site_sequences(store.engine, ["st"])
    assert s.gaps == ((1, 3000),)


def test_unregistered_sites_are_counted_not_stored(store: HqStore) -> None:
    r = store.write_batch(Batch(
        events=[row("st", 1), row("rogue", 1), row("rogue", 2)],
        site_messages=[SiteMessageRow("rogue", "alert", {"x": 1}, T0)],
    ))
    assert (r.stored, r.rejected) == (1, 3)
    with store.engine.connect() as c:
        rejected = dict(c.execute(select(hq_sites.c.site, hq_sites.c.rejected)).all())
        kinds = c.execute(select(hq_site_messages.c.site)).scalars().all()
    assert rejected == {"st": 0, "rogue": 3} and kinds == []
    assert registered_sites(store.engine) == {"st": "Paris"}
    assert register_site(store.engine, "rogue", None, T0) is True
    assert register_site(store.engine, "rogue", "Lyon", T0) is False
    assert registered_sites(store.engine) == {"rogue": "Lyon", "st": "Paris"}


def test_repairer_waits_for_grace_asks_retries_and_alerts(store: HqStore) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    now = [1_800_000_000.0]

    def publish(topic: str, payload: bytes) -> bool:
        sent.append((topic, json.loads(payload)))
        return True

    reg = CollectorRegistry()
    rep = GapRepairer(store.engine, publish, "p/rfidd/v1", reg, registered_only=True,
                      grace_s=10, retry_s=30, alert_s=100, clock=lambda: now[0])
    put(store, [1, 2, 5], head=6)
    assert rep.check_once() == [] and sent == []  # just seen: maybe in flight
    now[0] += 10
    assert rep.check_once() == ["st"]
    assert sent[-1][0] == "p/rfidd/v1/st/cmd/replay"
    assert sent[-1][1]["ranges"] == [[3, 4], [6, 6]]
    now[0] += 10
    assert rep.check_once() == []  # asked 10 s ago: not again yet
    now[0] += 20
    assert rep.check_once() == ["st"]
    assert reg.get_sample_value("rfidd_hq_missing_events") == 3
    assert reg.get_sample_value("rfidd_hq_sequence_gap_alerts_total") == 0
    now[0] += 100
    rep.check_once()
    assert reg.get_sample_value("rfidd_hq_sequence_gap_alerts_total") == 1
    rep.check_once()  # one alert per open gap, not one per round
    assert reg.get_sample_value("rfidd_hq_sequence_gap_alerts_total") == 1
    put(store, [3, 4, 6])
    asked = len(sent)
    assert rep.check_once() == [] and len(sent) == asked
    (s,) = site_sequences(store.engine, ["st"])
    assert s.gap_since is None and s.contiguous == 6
    with store.engine.connect() as c:
        alerts = [p["type"] for p in c.execute(
            select(hq_site_messages.c.payload).where(hq_site_messages.c.kind == "alert")
            .order_by(hq_site_messages.c.id)).scalars()]
    assert alerts == ["sequence_gap", "sequence_gap_closed"]


def test_repairer_retries_when_not_connected(store: HqStore) -> None:
    put(store, [2], head=2)
    calls: list[str] = []
    rep = GapRepairer(store.engine, lambda t, p: bool(calls.append(t)), "p", CollectorRegistry(),
                      grace_s=0, retry_s=3600)
    assert rep.check_once() == [] and len(calls) == 1  # refused: not counted as asked
    assert rep.check_once() == [] and len(calls) == 2  # so asked again next round


def test_capture_sources_are_not_listed_as_sites(store: HqStore) -> None:
    """Captured events are stored under "@{token name}"; when they carry another system's
    rfidd:seq that makes a row, but an integrator is no store: `rfidd hq sites` listed it as
    a site "heard of, not registered" with "held 0" beside the events HQ did hold."""
    from rfidd.hq import query

    put(store, [1, 2])
    store.write_batch(Batch(events=[row("@erp", n) for n in (5, 9)], trusted=True))
    assert [s.site for s in query.sites(store.engine)] == ["st"]


def test_events_of_one_instant_are_in_the_sites_order_for_where_and_history(
        store: HqStore) -> None:
    """An exit journals, at one eventTime, the read (no disposition) then the `stolen` event;
    they arrive in one batch, stored in eventID order: ordered by row id, `hq where` said the
    item was merely read at the exit. The site's sequence number is its order."""
    from rfidd.hq import chain, query

    epc = "urn:epc:id:sgtin:3760001.000104.1011"

    def ev(eid: str, seq: int, step: str | None, disp: str | None) -> EventRow:
        return EventRow(eid, "st", "ObjectEvent", T0, "OBSERVE", step, disp,
                        "urn:epc:id:sgln:3760001.00001.exit", None, None, {"n": seq}, (epc,),
                        seq=seq)

    read = ev("urn:uuid:ffff0000-0000-4000-8000-000000000001", 1, None, None)
    stolen = ev("urn:uuid:0000ffff-0000-4000-8000-000000000002", 2, "entering_exiting", "stolen")
    store.write_batch(Batch(events=[read, stolen]))  # stored stolen first (eventID order)
    last = query.where(store.engine, epc)
    assert last is not None and last.disposition == "stolen"
    assert [e.event_id for e in query.history(store.engine, epc)] == [read.event_id,
                                                                      stolen.event_id]
    assert chain.latest_per_item(store.engine) == [(epc, "st", "stolen")]
