"""Times and site messages as HQ shows them to people (rfidd.hq.humane)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from rfidd.hq import humane


def test_times_are_utc_said_so_to_the_second() -> None:
    paris = timezone(timedelta(hours=1))
    assert humane.when(datetime(2026, 12, 2, 14, 4, 5, 987654, tzinfo=paris)) \
        == "2026-12-02 13:04:05 UTC"
    assert humane.when(datetime(2026, 12, 2, 13, 4, 5)) == "2026-12-02 13:04:05 UTC"
    assert humane.when(None) == ""
    assert humane.when_text("2026-12-02T13:04:05.123Z") == "2026-12-02 13:04:05 UTC"
    assert humane.when_text("2026-12-02T14:04:05+01:00") == "2026-12-02 13:04:05 UTC"
    assert humane.when_text("urn:epc:id:sgtin:0614141.107346.1") \
        == "urn:epc:id:sgtin:0614141.107346.1"
    assert humane.when_text("2026-13-45T99:99") == "2026-13-45T99:99"  # looks like, is not


def test_a_message_is_named_fields_in_the_order_sent() -> None:
    p = {"type": "exit_unsold", "site": "st-01", "epc": "urn:epc:id:sgtin:1.2.3",
         "zone_name": "door", "at": "2026-12-02T13:04:05Z", "accuracy": 0.98765,
         "paid": False, "empty": "", "missing": None,
         "items": ["a", "b", "c", "d", "e"], "counts": {"found": 3, "expected": 4}}
    assert humane.pairs(p) == [
        ("epc", "urn:epc:id:sgtin:1.2.3"), ("zone name", "door"),
        ("at", "2026-12-02 13:04:05 UTC"), ("accuracy", "0.9877"), ("paid", "no"),
        ("items", "a; b; c (+2 more)"), ("counts", "found 3, expected 4")]
    assert humane.pairs([1, 2]) == [("", "1; 2")]


def test_epoch_times_of_site_messages_are_shown_as_utc_times_not_floats() -> None:
    # Sites publish their alerts' and reports' instants as epoch seconds (at, closed_at...):
    # "at 1.796e+09" on the /chain page tells HQ staff nothing about when it happened.
    from rfidd.hq.humane import pairs

    shown = dict(pairs({"type": "exit_unsold", "at": 1796222920.662399, "epc": "3034",
                        "reception": {"opened_at": 1796222916, "count": 12.5}}))
    assert shown["at"] == "2026-12-02 14:48:40 UTC"
    assert shown["reception"] == "opened_at 2026-12-02 14:48:36 UTC, count 12.5"
    assert dict(pairs({"closed_at": 1796222956.17}))["closed at"] == "2026-12-02 14:49:16 UTC"
    # a number that is not an instant keeps its figure, never in scientific notation
    assert dict(pairs({"lost_value": 1796.5}))["lost value"] == "1796.5"
    assert dict(pairs({"lost_value": 12345.67}))["lost value"] == "12345.67"
    assert dict(pairs({"rate": 0.95349}))["rate"] == "0.9535"
