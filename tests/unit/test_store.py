"""Fast store tests: serialisation helpers, input validation, error messages (in-memory SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from inventory.events import Action, ItemEvent, stable_event_id
from rfidd.store import (
    Database,
    DatabaseError,
    EventRecord,
    ItemUpsert,
    Message,
    StoreInputError,
    apply_batch,
    event_record,
    head_revision,
    item_event_dict,
    open_database,
    outbox_pending,
)


@pytest.fixture
def mem() -> Iterator[Database]:
    d = open_database("sqlite://")
    yield d
    d.dispose()


def _ev() -> ItemEvent:
    return ItemEvent(
        event_id=stable_event_id("unit", 1),
        event_time=1700000000.25,
        action=Action.ADD,
        epcs=("3034257BF7194E4000000001", "3034257BF7194E4000000002"),
        biz_step="commissioning",
        disposition="active",
        read_point="urn:epc:id:sgln:0614141.00777.bench",
        biz_location=None,
        biz_transactions=(("desadv", "urn:epcglobal:cbv:bt:0614141000005:ASN1"),),
        zone="bench",
    )


def test_item_event_dict_is_plain_json() -> None:
    d = item_event_dict(_ev())
    assert json.loads(json.dumps(d)) == d
    assert d["action"] == "ADD" and d["epcs"][1].endswith("2")
    assert d["biz_transactions"] == [["desadv", "urn:epcglobal:cbv:bt:0614141000005:ASN1"]]


def test_event_record_metadata() -> None:
    r = event_record(_ev(), {"eventID": "x"})
    assert (r.action, r.biz_step, r.zone, r.epc_count) == ("ADD", "commissioning", "bench", 2)
    assert r.payload == {"eventID": "x"}
    assert event_record(_ev()).payload["event_id"] == _ev().event_id


def test_in_memory_database_is_migrated(mem: Database) -> None:
    assert mem.current_revision() == head_revision() is not None
    with mem.write() as s:
        apply_batch(s, events=[event_record(_ev())])
    with mem.session() as s:
        assert [r.event_id for r in outbox_pending(s, 5)] == [_ev().event_id]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"item_upserts": [ItemUpsert("30AA"), ItemUpsert("")]}, r"item_upserts\[1\]: empty epc"),
        ({"events": [EventRecord("", 1.0, {})]}, r"events\[0\]: empty event_id"),
        ({"messages": [Message("alert", "alerts/#", {})]}, r"messages\[0\].*alerts/#"),
        ({"messages": [Message("report", "reports/count", {"t": {1, 2}.__iter__()})]},
         r"messages\[0\] \(reports/count\): payload is not JSON"),
    ],
)
def test_bad_input_names_what_and_where(mem: Database, kwargs: dict[str, object],
                                        match: str) -> None:
    with pytest.raises(StoreInputError, match=match), mem.write() as s:
        apply_batch(s, **kwargs)  # type: ignore[arg-type]
    with mem.session() as s:
        assert outbox_pending(s, 5) == []  # nothing half-written


def test_unsupported_and_unreachable_urls_name_the_database() -> None:
    with pytest.raises(DatabaseError, match=r"mysql.*unsupported"):
        open_database("mysql://u:secret@h/db")
    with pytest.raises(DatabaseError) as exc:
        open_database("postgresql+psycopg://u:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "127.0.0.1:1/db" in str(exc.value) and "secret" not in str(exc.value)
