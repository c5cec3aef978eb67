"""Site rules: presence changes (arrived / moved / departed) -> business events.

Which event a change produces depends on the kinds of the zones involved, looked up in handler
tables that other rules (reception, exit/shrinkage, POS) extend with `on_arrival`, `on_move`,
`on_departure` instead of editing this file. The defaults:

* arrival in a zone: an ObjectEvent OBSERVE with readPoint = the zone's SGLN and bizLocation =
  the site's SGLN, and *no* bizStep or disposition. An RFID arrival only proves the item is in
  the field of a reader; whether that is a reception (against an ASN: `receiving`), a customer
  return, a loan coming back, or the same item reappearing after a read gap is decided by the
  rules that know the documents. Asserting `arriving` from a read would put claims into HQ's
  history that the reception logic may then contradict; an OBSERVE with a location is true in
  every one of those cases.
* move stock -> floor: `stocking`, disposition sellable_accessible; floor -> stock: `storing`,
  sellable_not_accessible (DESIGN.md lifecycle). Any other move: OBSERVE at the new zone.
* departure: no event (absence of reads is not a business fact; shrinkage decides what it means).

Event ids are deterministic: the same change always yields the same eventID, and a stocking or
storing event has the id `Lifecycle` gives the same transition (site, EPC, bizStep, time), so
whichever path records it, HQ sees one event.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping

from inventory.epc import DecodedEpc
from inventory.events import Action, ItemEvent, stable_event_id
from inventory.presence import ChangeKind, PresenceChange

STOCK = "stock"
FLOOR = "floor"
ANY = "*"
"""Wildcard zone kind for handler registration."""

Handler = Callable[[PresenceChange, DecodedEpc | None], list[ItemEvent]]


class SiteRules:
    """Turns one site's PresenceChanges into ItemEvents. Pure; safe to call from one thread."""

    def __init__(
        self,
        site_sgln: str,
        zone_read_points: Mapping[str, str],
        zone_kinds: Mapping[str, str],
        site_id: str,
    ) -> None:
        missing = sorted(set(zone_kinds) - set(zone_read_points))
        if missing:
            raise ValueError(f"zones without a read point SGLN: {', '.join(missing)}")
        self.site_sgln = site_sgln
        self.site_id = site_id
        self.zone_read_points = dict(zone_read_points)
        self.zone_kinds = {z: str(k) for z, k in zone_kinds.items()}
        self.skipped = 0
        """Changes left without an event because their EPC cannot be written as a URI."""
        self.unknown_zones = 0
        """Changes in zones missing from the config (readPoint falls back to the site SGLN)."""
        self._arrival: dict[str, Handler] = {ANY: self.observe}
        self._move: dict[tuple[str, str], Handler] = {
            (ANY, ANY): self.observe,
            (STOCK, FLOOR): self._stocking,
            (FLOOR, STOCK): self._storing,
        }
        self._departure: dict[str, Handler] = {ANY: _no_event}

    # -- extension points ----------------------------------------------------------------------

    def on_arrival(self, kind: str, handler: Handler) -> None:
        """Handle arrivals in zones of `kind` (or ANY)."""
        self._arrival[kind] = handler

    def on_move(self, from_kind: str, to_kind: str, handler: Handler) -> None:
        """Handle moves between zone kinds; either side may be ANY (exact pairs win)."""
        self._move[(from_kind, to_kind)] = handler

    def on_departure(self, kind: str, handler: Handler) -> None:
        """Handle departures from zones of `kind` (or ANY)."""
        self._departure[kind] = handler

    # -- the rules -----------------------------------------------------------------------------

    def kind_of(self, zone: str | None) -> str | None:
        return None if zone is None else self.zone_kinds.get(zone)

    def events_for(
        self,
        changes: Iterable[PresenceChange],
        decoded: Mapping[str, DecodedEpc] | None = None,
        held: Container[str] = (),
    ) -> list[ItemEvent]:
        """The events of a batch of changes, in change order.

        `held` are the items the site's books hold: their stockroom/floor moves are the books'
        to decide (they know a sold item from stock, and an item already shelved), so these
        rules make stocking/storing only for the others (e.g. stock from before rfidd)."""
        out: list[ItemEvent] = []
        for change in changes:
            d = decoded.get(change.epc) if decoded is not None else None
            if d is not None and d.epcis_uri is None:
                self.skipped += 1
                continue
            handler = self.handler_for(change)
            if change.epc in held and handler in (self._stocking, self._storing):
                continue
            out.extend(handler(change, d))
        return out

    def handler_for(self, change: PresenceChange) -> Handler:
        if change.kind is ChangeKind.ARRIVED:
            return _lookup(self._arrival, self._kind(change.zone))
        if change.kind is ChangeKind.DEPARTED:
            return _lookup(self._departure, self._kind(change.from_zone))
        a, b = self._kind(change.from_zone), self._kind(change.zone)
        table = self._move
        return table.get((a, b)) or table.get((a, ANY)) or table.get((ANY, b)) or table[(ANY, ANY)]

    def observe(self, change: PresenceChange, decoded: DecodedEpc | None = None) -> list[ItemEvent]:
        """An OBSERVE of the item where it now is (no bizStep, disposition unchanged)."""
        return [self.event(change)]

    def event(
        self,
        change: PresenceChange,
        biz_step: str | None = None,
        disposition: str | None = None,
        action: Action = Action.OBSERVE,
        biz_transactions: tuple[tuple[str, str], ...] = (),
    ) -> ItemEvent:
        """The event of `change` in its zone, for handlers: id, time, readPoint, bizLocation.

        With a bizStep the id is (site, EPC, bizStep, time), the same as `Lifecycle` gives that
        step; without, it names the change itself.
        """
        zone = change.zone if change.zone is not None else change.from_zone
        if biz_step is not None:
            event_id = stable_event_id(self.site_id, change.epc, biz_step, change.at)
        else:
            event_id = stable_event_id(
                self.site_id,
                change.epc,
                change.kind.value,
                change.from_zone,
                change.zone,
                change.at,
            )
        return ItemEvent(
            event_id=event_id,
            event_time=change.at,
            action=action,
            epcs=(change.epc,),
            biz_step=biz_step,
            disposition=disposition,
            read_point=self.read_point(zone),
            biz_location=self.site_sgln,
            biz_transactions=biz_transactions,
            zone=zone,
        )

    def read_point(self, zone: str | None) -> str:
        rp = self.zone_read_points.get(zone) if zone is not None else None
        if rp is None:
            self.unknown_zones += 1
            return self.site_sgln
        return rp

    def _kind(self, zone: str | None) -> str:
        kind = self.kind_of(zone)
        return ANY if kind is None else kind

    def _stocking(self, change: PresenceChange, decoded: DecodedEpc | None) -> list[ItemEvent]:
        return [self.event(change, "stocking", "sellable_accessible")]

    def _storing(self, change: PresenceChange, decoded: DecodedEpc | None) -> list[ItemEvent]:
        return [self.event(change, "storing", "sellable_not_accessible")]


def _lookup(table: Mapping[str, Handler], kind: str) -> Handler:
    return table.get(kind) or table[ANY]


def _no_event(change: PresenceChange, decoded: DecodedEpc | None) -> list[ItemEvent]:
    return []
