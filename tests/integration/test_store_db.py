"""The store on real SQLite and PostgreSQL: migrations, batch writes, the outbox queue."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from inventory.events import Action, ItemEvent, stable_event_id
from rfidd.store import (
    Database,
    EventRecord,
    ItemUpsert,
    Message,
    PresenceRow,
    StoreInputError,
    apply_batch,
    event_record,
    get_item,
    head_revision,
    load_presence,
    mark_sent,
    open_database,
    outbox_pending,
    outbox_stats,
    purge_sent,
    upsert_products,
)
from rfidd.store.models import Event, OutboxMessage, Product

pytestmark = pytest.mark.integration


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = open_database(db_url)
    yield d
    d.dispose()


def _event(n: int, epc: str = "3034257BF7194E4000000001", t: float = 1000.0) -> ItemEvent:
    return ItemEvent(
        event_id=stable_event_id("test", n),
        event_time=t + n,
        action=Action.OBSERVE,
        epcs=(epc,),
        biz_step="storing",
        disposition="sellable_not_accessible",
        read_point="urn:epc:id:sgln:0614141.00777.stock",
        biz_location="urn:epc:id:sgln:0614141.00777.0",
        zone="stock",
    )


def test_migrates_to_head_and_is_idempotent(db_url: str) -> None:
    d = open_database(db_url)
    try:
        assert d.current_revision() == head_revision() is not None
        tables = set(inspect(d.engine).get_table_names())
        assert {"items", "zone_presence", "outbox", "products", "events"} <= tables
        idx = {i["name"] for i in inspect(d.engine).get_indexes("outbox")}
        assert "ix_outbox_sent_at_id" in idx
    finally:
        d.dispose()
    again = open_database(db_url)  # second open: nothing to do, no error
    try:
        assert again.current_revision() == head_revision()
    finally:
        again.dispose()


def test_models_match_migrations(db: Database) -> None:
    """A model change without a migration (or the reverse) fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from rfidd.store.db import import_all_models
    from rfidd.store.models import Base

    import_all_models()
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_sqlite_pragmas(sqlite_url: str) -> None:
    d = open_database(sqlite_url)
    try:
        with d.engine.connect() as c:
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert c.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert (c.execute(text("PRAGMA busy_timeout")).scalar() or 0) >= 1000
    finally:
        d.dispose()


def test_open_database_from_another_cwd(tmp_path: os.PathLike[str], sqlite_url: str) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        d = open_database(sqlite_url)
        assert d.current_revision() == head_revision()
        d.dispose()
    finally:
        os.chdir(cwd)


def test_apply_batch_writes_everything_and_replay_is_noop(db: Database) -> None:
    epc = "3034257BF7194E4000000001"
    events = [event_record(_event(1, epc)), event_record(_event(2, epc))]
    with db.write() as s:
        r = apply_batch(
            s,
            [ItemUpsert(epc, seen_at=1001.0, zone="stock", gtin="00614141123452", serial="1")],
            events,
            [Message("alert", "alerts", {"kind": "exit", "epc": epc})],
            presence=[PresenceRow(epc, "stock", 1001.0, 1001.0, "r1", 1, -55.5)],
            now=2000.0,
        )
    assert (r.items, r.events, r.messages, r.presence) == (1, 2, 1, 1)
    # The same batch again (crash between commit and ack, then replay): no new event rows.
    with db.write() as s:
        r2 = apply_batch(s, [ItemUpsert(epc, seen_at=1005.0)], events, [], now=2001.0)
    assert r2.events == 0 and sorted(r2.duplicate_events) == sorted(e.event_id for e in events)
    with db.session() as s:
        rows = outbox_pending(s, 100)
        assert [(x.stream, x.topic) for x in rows] == [
            ("epcis", "epcis"), ("epcis", "epcis"), ("alert", "alerts")
        ]
        assert [x.event_id for x in rows[:2]] == [e.event_id for e in events]
        assert s.scalar(select(Event.id).where(Event.event_id == events[0].event_id))
        item = get_item(s, epc)
        assert item is not None
        # None in an upsert keeps the stored value; seen_at widens the window.
        assert (item.zone, item.gtin, item.first_seen, item.last_seen) == (
            "stock", "00614141123452", 1001.0, 1005.0
        )
        assert load_presence(s) == [PresenceRow(epc, "stock", 1001.0, 1001.0, "r1", 1, -55.5)]


def test_duplicate_inside_one_batch_is_inserted_once(db: Database) -> None:
    ev = event_record(_event(7))
    with db.write() as s:
        r = apply_batch(s, events=[ev, ev])
    assert r.events == 1 and r.duplicate_events == [ev.event_id]
    with db.session() as s:
        assert len(outbox_pending(s, 10)) == 1


def test_replay_after_purge_is_still_noop(db: Database) -> None:
    ev = event_record(_event(3))
    with db.write() as s:
        apply_batch(s, events=[ev], now=100.0)
    with db.write() as s:
        ids = [r.id for r in outbox_pending(s, 10)]
        assert mark_sent(s, ids, now=100.0) == 1
        assert purge_sent(s, older_than_s=10, now=200.0) == 1
    with db.write() as s:
        assert apply_batch(s, events=[ev], now=300.0).events == 0
    with db.session() as s:
        assert outbox_pending(s, 10) == []


def test_departure_and_zone_move(db: Database) -> None:
    a, b = "30340000000000000000000A", "30340000000000000000000B"
    with db.write() as s:
        apply_batch(
            s,
            [ItemUpsert(a, 1.0, "stock"), ItemUpsert(b, 1.0, "stock")],
            presence=[PresenceRow(a, "stock", 1.0, 1.0), PresenceRow(b, "stock", 1.0, 1.0)],
        )
    with db.write() as s:
        apply_batch(
            s,
            [ItemUpsert(a, 5.0, "floor")],
            presence=[PresenceRow(a, "floor", 5.0, 5.0)],
            departed=[b],
        )
    with db.session() as s:
        assert load_presence(s) == [PresenceRow(a, "floor", 5.0, 5.0)]
        item_b = get_item(s, b)
        assert item_b is not None and item_b.zone == "stock"  # last known zone stays


def test_presence_needs_an_item(db: Database) -> None:
    """Foreign keys are enforced on both databases (SQLite needs the pragma)."""
    with pytest.raises(Exception, match=r"(?i)foreign key"), db.write() as s:
        apply_batch(s, presence=[PresenceRow("30FF", "stock", 1.0, 1.0)])


def test_failed_batch_rolls_back_entirely(db: Database) -> None:
    bad = EventRecord("urn:uuid:x", 1.0, {"not json": object()})
    with pytest.raises(StoreInputError, match=r"events\[1\].*urn:uuid:x"), db.write() as s:
        apply_batch(
            s, [ItemUpsert("30AB", 1.0, "stock")], [event_record(_event(1)), bad]
        )
    with db.session() as s:
        assert get_item(s, "30AB") is None
        assert outbox_pending(s, 10) == []


def test_outbox_pending_after_id_mark_sent_stats_purge(db: Database) -> None:
    with db.write() as s:
        apply_batch(s, messages=[Message("report", "reports/count", {"n": i}) for i in range(5)],
                    now=1000.0)
    with db.session() as s:
        rows = outbox_pending(s, 10)
        assert len(rows) == 5 and [r.id for r in rows] == sorted(r.id for r in rows)
        assert outbox_stats(s, now=1010.0) == (5, 10.0)
        assert [r.id for r in outbox_pending(s, 2, after_id=rows[1].id)] == [
            rows[2].id, rows[3].id
        ]
    with db.write() as s:
        assert mark_sent(s, [rows[0].id, rows[1].id], now=1020.0) == 2
        assert mark_sent(s, [rows[0].id], now=1030.0) == 0  # already sent: unchanged
    with db.session() as s:
        assert [r.id for r in outbox_pending(s, 10)] == [r.id for r in rows[2:]]
        assert outbox_stats(s, now=1030.0) == (3, 30.0)
    with db.write() as s:
        assert purge_sent(s, older_than_s=60, now=1050.0) == 0  # too recent
        assert purge_sent(s, older_than_s=60, now=1100.0) == 2
    with db.session() as s:
        assert s.scalar(select(OutboxMessage.id).where(OutboxMessage.id == rows[0].id)) is None
    with db.write() as s:
        mark_sent(s, [r.id for r in rows[2:]], now=1200.0)
    with db.session() as s:
        assert outbox_stats(s, now=1300.0) == (0, 0.0)


def test_products_upsert(db: Database) -> None:
    with db.write() as s:
        upsert_products(s, [{"gtin": "614141123452", "sku": "BAG-1", "price": "1250.00",
                             "currency": "EUR"}], now=1.0)
        upsert_products(s, [{"gtin": "00614141123452", "name": "Bag", "price": 1300}], now=2.0)
    with db.session() as s:
        p = s.get(Product, "00614141123452")
        assert p is not None and p.name == "Bag" and p.price == Decimal("1300.00")
        assert p.sku is None  # a catalog push replaces the row
    with pytest.raises(StoreInputError, match=r"products\[0\].*colour_"), db.write() as s:
        upsert_products(s, [{"gtin": "1", "colour_": "red"}], now=3.0)


def test_concurrent_writer_and_marker(db: Database) -> None:
    """The ingest writer and the publisher's mark_sent run on different threads."""
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(30):
                with db.write() as s:
                    apply_batch(s, messages=[Message("status", "x", {"i": i, "j": j})
                                             for j in range(20)])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    sent = 0
    while True:
        # Whether the writer had ended is read *before* the outbox: "ended and nothing pending"
        # then means its last commit was already visible. Read after, a commit landing between
        # the two reads was never marked (580 of 600 under load).
        writer_done = not t.is_alive()
        with db.write() as s:
            rows = outbox_pending(s, 100)
            sent += mark_sent(s, [r.id for r in rows])
        if not rows and writer_done:
            break
        time.sleep(0.001)
    t.join()
    assert not errors
    assert sent == 600


@pytest.mark.parametrize("fork", [True, False])
def test_a_schema_upgrade_in_a_child_leaves_alembic_out_of_this_process(
        tmp_path: Path, fork: bool) -> None:
    """`rfidd run` migrates in a child (forked, or spawned when threads run): the schema ends
    at the packaged head, this process never imports Alembic, a failure names its reason."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rfidd.store.db import packaged_head, open_database\n"
        "from rfidd.store import migrate\n"
        f"before, after = migrate.run_upgrade(sys.argv[1], fork={fork})\n"
        "db = open_database(sys.argv[1], migrate=False)\n"
        "print(before, after == packaged_head(), db.at_revision(packaged_head()),\n"
        "      any(m.split('.')[0] == 'alembic' for m in sys.modules))\n"
        "try:\n"
        "    migrate.run_upgrade(sys.argv[2], fork=" + str(fork) + ")\n"
        "except RuntimeError as exc:\n"
        "    print('error:', exc)\n")
    url = f"sqlite:///{tmp_path}/m.db"
    (tmp_path / "bad.db").write_bytes(b"not a database, " * 512)
    out = subprocess.run([sys.executable, "-c", code, url, f"sqlite:///{tmp_path}/bad.db"],
                         capture_output=True, text=True, check=True, timeout=300
                         ).stdout.splitlines()
    assert out[0] == "None True True False"
    assert out[1].startswith("error: ") and "not a database" in out[1]
