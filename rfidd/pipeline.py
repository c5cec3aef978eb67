"""The shape of one ingest batch: a read-only view in, one plan per component out.

The ingest thread builds a `BatchView` (presence changes, decoded EPCs, the first read of each
item in the zones components watch, and the books' record of every item involved, loaded once
per batch). Each `BatchComponent` returns a `BatchPlan` from it without touching its in-memory
state; the ingest commits every plan in one transaction and only then calls each plan's `apply`.
A retried commit replays the same plans, so a database error never loses an alert nor counts
one twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session

from inventory.epc import DecodedEpc
from inventory.events import ItemEvent
from inventory.lifecycle import ItemState
from inventory.presence import PresenceChange
from rfidd.store import repo

ZoneRead = tuple[str, str, float]
"""(epc, zone, seen_at): the first read of an item in a watched zone within the batch."""


@dataclass(frozen=True, slots=True)
class BatchView:
    """What one batch saw, and what the books say about the items it involves."""

    changes: Sequence[PresenceChange]
    decoded: Mapping[str, DecodedEpc]
    reads: Sequence[ZoneRead] = ()
    books: Mapping[str, ItemState | None] = field(default_factory=dict)
    """The lifecycle record of every item in `changes` (but departures) and `reads`; None:
    the site's books do not hold it (e.g. stock from before rfidd was installed)."""

    def reads_in(self, zones: frozenset[str]) -> list[ZoneRead]:
        return [r for r in self.reads if r[1] in zones]

    def record(self, epc: str) -> ItemState | None:
        return self.books.get(epc)

    def on_books(self, epc: str) -> bool:
        return self.books.get(epc) is not None


@dataclass(slots=True)
class BatchPlan:
    """What a component wants from one batch. `write` adds its own rows inside the batch's
    transaction (it runs again if the commit is retried); `apply` updates the component's
    memory after the commit succeeded, exactly once."""

    events: list[ItemEvent] = field(default_factory=list)
    messages: list[repo.Message] = field(default_factory=list)
    upserts: list[repo.ItemUpsert] = field(default_factory=list)
    write: Callable[[Session], None] | None = None
    apply: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self.events or self.messages or self.upserts or self.write or self.apply)


class BatchComponent(Protocol):
    """A domain component fed by the ingest (reception, exits, lifecycle, ...)."""

    name: str
    watched_zones: frozenset[str]
    """Zones whose every read (not only settled presence) the component needs in the view."""

    def plan(self, view: BatchView) -> BatchPlan | None: ...


BooksLoader = Callable[[Session, Sequence[str]], Mapping[str, ItemState | None]]
"""Loads the books' record of items, one query per table (rfidd.lifecycle.books)."""
