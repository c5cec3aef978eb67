"""What app.py hands to each business service (store operations, lifecycle, commands).

Services never build components themselves: they receive this context and write through
`emit`/`transaction`, which put state changes and the events they cause in one transaction
(the outbox contract). What a service feeds on is wired by app.py through typed calls: a
`BatchComponent` is added to the ingest, a command handler registered here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from inventory.epcis import to_epcis
from inventory.events import ItemEvent
from inventory.presence import PresenceTracker
from rfidd.actor import current_actor
from rfidd.config import Config
from rfidd.health import DatabaseHealth, DomainLock, ServiceUnavailable
from rfidd.metrics import Metrics
from rfidd.store import repo
from rfidd.store.db import Database

# An HQ command: (payload already parsed as JSON) -> a short result for the log; raise
# CommandRejected (rfidd.commands) or ValueError with a message naming the bad field.
CommandHandler = Callable[[Any], str]


class Service(Protocol):
    """A business service wired by app.py."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ServiceContext:
    config: Config
    db: Database
    metrics: Metrics
    tracker: PresenceTracker
    tracker_lock: DomainLock
    """The domain-state lock: the presence tracker and every service's in-memory state.
    Lock order, everywhere: this lock first, then a write transaction (the ingest thread holds
    it across one commit attempt of a batch, never across a retry wait; a service takes it
    before ctx.transaction()). One lock in one order is what keeps SQLite from timing out and
    PostgreSQL from deadlocking on row locks between the ingest thread and staff or HQ
    commands. Staff calls give up after a second with ServiceUnavailable (HTTP 503)."""
    health: DatabaseHealth = field(default_factory=DatabaseHealth)
    notify_outbox: Callable[[], None] = lambda: None
    catalog_listeners: list[Callable[[frozenset[str] | None], None]] = field(
        default_factory=list)
    command_handlers: dict[str, CommandHandler] = field(default_factory=dict)

    def event_json(self, ev: ItemEvent) -> dict[str, Any]:
        return to_epcis(ev, self.config.site.timezone)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction; call `stage` inside it to add events/messages atomically.
        While the database is down (the ingest is retrying) it refuses at once, and a database
        failure inside it is ServiceUnavailable: staff get a 503 with the reason, not a hang."""
        self.health.check()
        try:
            with self.db.write() as s:
                yield s
        except (OperationalError, InterfaceError) as exc:
            reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:200]
            raise ServiceUnavailable(f"database unavailable: {reason}") from exc
        self.notify_outbox()

    def records(self, events: Sequence[ItemEvent]) -> list[repo.EventRecord]:
        """The events as journal records (EPCIS JSON, with the actor of the calling thread):
        what `stage` writes; made ahead by a staff operation planning outside the lock."""
        actor = current_actor.get()
        if actor is not None:  # caused through the API: HQ learns by whom (an opaque id)
            events = [replace(e, extensions={**e.extensions, "actor": actor}) for e in events]
        return [repo.event_record(e, self.event_json(e)) for e in events]

    def stage(self, s: Session, events: Sequence[ItemEvent] = (),
              messages: Sequence[repo.Message] = (),
              items: Sequence[repo.ItemUpsert] = (),
              records: Sequence[repo.EventRecord] | None = None) -> repo.BatchResult:
        """Journal events, queue them and messages for HQ, inside the caller's transaction.
        `records`: `records(events)`, made ahead."""
        if records is None:
            records = self.records(events)
        res = repo.apply_batch(s, items, records, messages, now=time.time())
        for e in events:
            if e.event_id not in res.duplicate_events:
                self.metrics.events.labels(e.biz_step or "observe").inc()
        return res

    def emit(self, events: Sequence[ItemEvent] = (), messages: Sequence[repo.Message] = (),
             items: Sequence[repo.ItemUpsert] = ()) -> repo.BatchResult:
        """Events and messages in their own transaction (outside the ingest thread)."""
        with self.transaction() as s:
            return self.stage(s, events, messages, items)

    def topic(self, *parts: str) -> str:
        """A topic suffix relative to the site prefix (the outbox stores suffixes)."""
        return "/".join(parts)

    def catalog_changed(self, gtins: frozenset[str] | None) -> None:
        """The product catalog changed (None or empty: no catalog, every GTIN is accepted)."""
        for listener in self.catalog_listeners:
            listener(gtins or None)

    def register_command(self, name: str, handler: CommandHandler) -> None:
        if name in self.command_handlers:
            raise ValueError(f"HQ command {name!r} registered twice")
        self.command_handlers[name] = handler
