"""The site's gap-free event sequence and the journal replay, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from inventory.events import Action, ItemEvent, stable_event_id
from rfidd.replay import parse_request
from rfidd.store import Database, apply_batch, event_record, mark_sent, open_database, repo
from rfidd.store.models import Event

pytestmark = pytest.mark.integration


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = open_database(db_url)
    yield d
    d.dispose()


def _ev(n: int) -> ItemEvent:
    return ItemEvent(
        event_id=stable_event_id("seq-test", n), event_time=1000.0 + n, action=Action.OBSERVE,
        epcs=(f"3034257BF7194E40000{n:05X}",), biz_step="storing",
        disposition="sellable_not_accessible", zone="stock",
        read_point="urn:epc:id:sgln:0614141.00777.stock",
        biz_location="urn:epc:id:sgln:0614141.00777.0",
    )


def _journal(db: Database, ns: range) -> None:
    with db.write() as s:
        apply_batch(s, events=[event_record(_ev(n)) for n in ns], now=2000.0 + ns.start)


def test_sequence_is_gap_free_across_batches_duplicates_and_rollbacks(db: Database) -> None:
    _journal(db, range(0, 5))
    _journal(db, range(3, 8))  # 3, 4 are duplicates: they take no number
    with pytest.raises(RuntimeError), db.write() as s:  # a rolled-back batch gives its back
        apply_batch(s, events=[event_record(_ev(100))])
        raise RuntimeError("crash")
    _journal(db, range(8, 10))
    with db.session() as s:
        seqs = list(s.scalars(select(Event.seq).order_by(Event.id)))
        pending = repo.outbox_pending(s, 100)
        assert repo.last_seq(s) == 10
    assert seqs == list(range(1, 11))
    assert [r.seq for r in pending] == list(range(1, 11))


def test_concurrent_writers_share_one_sequence(db: Database) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for b in range(10):
                base = k * 1000 + b * 10
                _journal(db, range(base, base + 10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with db.session() as s:
        seqs = sorted(s.scalars(select(Event.seq)))
    assert seqs == list(range(1, 401))


def test_published_through_stops_at_the_first_unacknowledged_event(db: Database) -> None:
    _journal(db, range(0, 6))
    with db.session() as s:
        rows = repo.outbox_pending(s, 100)
        assert repo.published_through(s) == 0
    with db.write() as s:
        mark_sent(s, [r.id for r in rows[:4]])
    with db.session() as s:
        assert repo.published_through(s) == 4
    with db.write() as s:
        mark_sent(s, [r.id for r in rows])
    with db.session() as s:
        assert repo.published_through(s) == 6


def test_replay_queues_journal_events_in_order_once_while_pending(db: Database) -> None:
    _journal(db, range(0, 10))
    with db.write() as s:
        mark_sent(s, [r.id for r in repo.outbox_pending(s, 100)])
    with db.write() as s:
        assert repo.queue_replay(s, 3, 6) == 4
    with db.write() as s:  # asked again while those are still pending: nothing new
        assert repo.queue_replay(s, 1, 8) == 4  # only 1, 2, 7, 8
    with db.session() as s:
        rows = repo.outbox_pending(s, 100)
        journal = {e.seq: e.payload for e in s.scalars(select(Event))}
    assert [r.seq for r in rows] == [3, 4, 5, 6, 1, 2, 7, 8]
    assert all(r.event_id is None and r.stream == repo.EPCIS_STREAM for r in rows)
    assert all(r.payload == journal[r.seq] for r in rows)
    with db.session() as s:
        assert repo.seq_since(s, 2000.0) == 1
        assert repo.seq_since(s, 9999.0) is None


@pytest.mark.parametrize("payload, error", [
    ([], "expected an object"),
    ({}, "exactly one of"),
    ({"from_seq": 0}, "from_seq must be a whole number"),
    ({"from_seq": 5, "to_seq": 2}, "before from_seq"),
    ({"ranges": [[1]]}, "ranges[0] is not a [first, last] pair"),
    ({"ranges": [[1, 2], [4, "x"]]}, "ranges[1][1]"),
    ({"since": "yesterday"}, "not an ISO 8601"),
    ({"since": "2026-12-01T00:00:00"}, "no time zone"),
    ({"since": "2026-12-01T00:00:00Z", "extra": 1}, "unknown fields ['extra']"),
    ({"from_seq": 1, "request_id": "a b"}, "request_id"),
])
def test_replay_request_errors_name_the_field(payload: object, error: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_request(payload)
    assert error in str(exc.value)


def test_replay_request_forms() -> None:
    assert parse_request({"ranges": [[1, 3], [7, 7]], "request_id": "r1"}) == (
        "r1", [(1, 3), (7, 7)], None)
    _rid, ranges, since = parse_request({"since": "2026-12-01T00:00:00Z"})
    assert ranges is None and since == 1796083200.0
    assert json.dumps(parse_request({"from_seq": 4})[1]) == json.dumps([[4, 2**62]])
