"""The floor feed: a held item reaching reception or the floor is one notice; an item on the
desk reader is one scan however many batches read it; nothing is noted before the commit."""

from __future__ import annotations

from inventory.lifecycle import Hold, ItemState, Status
from inventory.presence import ChangeKind, PresenceChange
from rfidd.pipeline import BatchView
from rfidd.web.floor import proximity
from rfidd.web.floor_feed import DESK_REPEAT_S, FloorFeed

ZONES = {"stockroom": "stock", "floor": "floor", "reception": "reception", "pos": "pos",
         "exit": "exit"}
HELD, FREE = "3034E57E04001940000003E8", "3034E57E04001940000003E9"


def _state(epc: str, held: bool) -> ItemState:
    return ItemState(epc=epc, status=Status.HELD if held else Status.IN_STOCK,
                     disposition="reserved" if held else "sellable_accessible", site="s",
                     since=1.0, hold=Hold("C-1042", "s-1") if held else None)


def _moved(epc: str, to: str, at: float = 10.0, src: str | None = "stockroom") -> PresenceChange:
    return PresenceChange(ChangeKind.MOVED if src else ChangeKind.ARRIVED, epc, to, src, at)


def _run(feed: FloorFeed, view: BatchView) -> None:
    plan = feed.plan(view)
    if plan is not None and plan.apply is not None:
        plan.apply()


def test_a_held_item_arriving_at_reception_or_on_the_floor_is_one_notice() -> None:
    feed = FloorFeed(ZONES)
    books = {HELD: _state(HELD, True), FREE: _state(FREE, False)}
    plan = feed.plan(BatchView(changes=[_moved(HELD, "reception"), _moved(FREE, "reception")],
                               decoded={}, books=books))
    assert plan is not None and feed.since(0) == []  # nothing before the commit
    assert plan.apply is not None
    plan.apply()
    got = feed.since(0, "held_arrived")
    assert [(n.epc, n.zone, n.zone_kind, n.client) for n in got] == [
        (HELD, "reception", "reception", "C-1042")]
    _run(feed, BatchView(changes=[_moved(HELD, "floor", src="reception")], decoded={},
                         books=books))
    assert [n.zone_kind for n in feed.since(got[0].seq)] == ["floor"]
    # Moving into the stockroom or the exit, or departing, is no news for the floor.
    before = feed.last_seq()
    _run(feed, BatchView(changes=[_moved(HELD, "stockroom", src="floor"),
                                  _moved(HELD, "exit", src="stockroom"),
                                  PresenceChange(ChangeKind.DEPARTED, HELD, None, "exit", 20.0)],
                         decoded={}, books=books))
    assert feed.last_seq() == before


def test_an_item_left_on_the_desk_is_one_scan() -> None:
    feed = FloorFeed(ZONES)
    assert feed.watched_zones == {"pos"} and feed.has_desk
    for i in range(20):  # read in every batch while it sits there
        _run(feed, BatchView(changes=[], decoded={}, reads=[(FREE, "pos", 100.0 + i * 0.2),
                                                            (HELD, "floor", 100.0)]))
    scans = feed.since(0, "desk_scan")
    assert [(n.epc, n.zone) for n in scans] == [(FREE, "pos")]
    # Taken away, then put back later: a new scan.
    _run(feed, BatchView(changes=[], decoded={},
                         reads=[(FREE, "pos", 104.0 + DESK_REPEAT_S + 1)]))
    assert len(feed.since(0, "desk_scan")) == 2


def test_the_feed_is_bounded() -> None:
    feed = FloorFeed(ZONES, keep=5)
    for i in range(12):
        epc = f"3034E57E0400194000000{i:03X}"
        _run(feed, BatchView(changes=[], decoded={}, reads=[(epc, "pos", float(i))]))
    assert len(feed.since(0)) == 5 and feed.last_seq() == 12


def test_proximity_bar() -> None:
    assert proximity(None) == 0.0
    assert proximity(-90.0) == 0.0 and proximity(-20.0) == 1.0
    assert proximity(-70.0) < proximity(-50.0) < proximity(-35.0)
