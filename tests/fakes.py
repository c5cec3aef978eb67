"""Test doubles shared by the suite (import as `from fakes import FakeReader`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from inventory.epc import EpcClassifier
from inventory.epcis import event_to_json
from inventory.events import ItemEvent
from inventory.presence import PresenceTracker
from inventory.rules import SiteRules
from readers.base import ReaderState, TagRead
from rfidd.config import Config
from rfidd.context import ServiceContext
from rfidd.health import DomainLock
from rfidd.ingest import Ingestor
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.pipeline import BooksLoader
from rfidd.store.db import Database, open_database


class FakeReader:
    """A reader the test drives: reads go straight into the daemon's ingest queue."""

    def __init__(self, name: str, sink: IngestQueue) -> None:
        self.name, self.sink = name, sink
        self._state = ReaderState.OFFLINE
        self.starts = 0
        self.dead = False  # a test sets it: the supervisor thread "died"
        self.late_s = 0.0  # a test sets it: the supervisor thread "hangs"

    def start(self) -> None:
        self.starts += 1
        self.dead = False
        self._state = ReaderState.ONLINE
        self.sink.on_state(self.name, ReaderState.ONLINE, "test")

    def stop(self, timeout: float = 5.0) -> None:
        self._state = ReaderState.OFFLINE

    @property
    def state(self) -> ReaderState:
        return self._state

    def running(self) -> bool:
        return not self.dead

    def hung_for(self) -> float:
        return self.late_s

    def read(self, epcs: list[str], antenna: int = 1, at: float | None = None) -> None:
        now = time.time() if at is None else at
        self.sink.on_reads(self.name, [TagRead(e, self.name, antenna, -50.0, now) for e in epcs])


def site_rules(zones: dict[str, str], site: str = "s1",
               sgln: str = "urn:epc:id:sgln:3760001.00001.0") -> SiteRules:
    """SiteRules for zones {name: kind}, each zone's read point derived from the site SGLN."""
    return SiteRules(site_sgln=sgln, site_id=site,
                     zone_read_points={z: f"{sgln}.{z}" for z in zones}, zone_kinds=zones)


class QuietRules(SiteRules):
    """Site rules that turn no change into an event."""

    def __init__(self, zones: dict[str, str]) -> None:
        r = site_rules(zones)
        super().__init__(r.site_sgln, r.zone_read_points, r.zone_kinds, r.site_id)

    def events_for(self, *_a: object, **_k: object) -> list[ItemEvent]:
        return []


def make_ingestor(db: Database, zone_of: dict[tuple[str, int], str], zones: dict[str, str],
                  *, lock: DomainLock | None = None, metrics: Metrics | None = None,
                  tracker: PresenceTracker | None = None, books: BooksLoader | None = None,
                  maxsize: int = 100, quiet_rules: bool = False) -> tuple[Ingestor, IngestQueue]:
    """An Ingestor over `db` with one online reader per reader name in `zone_of`;
    `quiet_rules`: the site rules make no event (a test of one component's events)."""
    metrics = Metrics() if metrics is None else metrics
    q = IngestQueue(metrics, maxsize=maxsize)
    if tracker is None:
        tracker = PresenceTracker(departure_s=10, move_margin_db=0, move_margin_decay_s=1)
    lock = DomainLock() if lock is None else lock
    rules = QuietRules(zones) if quiet_rules else site_rules(zones)
    ing = Ingestor(source=q, database=db, tracker=tracker, lock=lock,
                   classifier=EpcClassifier(()), zone_of=zone_of, rules=rules,
                   encode=lambda ev: event_to_json(ev, "UTC"), books=books, metrics=metrics,
                   stop=threading.Event())
    ing.retry_initial_s = 0.01
    for reader in {r for r, _ in zone_of}:
        q.on_state(reader, ReaderState.ONLINE, "test")
    return ing, q


def site_config(tmp_path: Path, zones: dict[str, str] | None = None, **extra: object) -> Config:
    """A minimal valid site configuration on a SQLite file in `tmp_path`."""
    zones = zones or {"stockroom": "stock", "floor": "floor", "exit": "exit"}
    return Config.model_validate({
        "site": {"id": "s1", "name": "U", "sgln": "urn:epc:id:sgln:3760001.00001.0",
                 "company_prefixes": ["3760001"]},
        "database": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
        "mqtt": {"enabled": False}, "http": {"enabled": False},
        "zones": {z: {"kind": k} for z, k in zones.items()},
        **extra,
    })


def service_context(tmp_path: Path, zones: dict[str, str] | None = None) -> ServiceContext:
    cfg = site_config(tmp_path, zones)
    tracker = PresenceTracker(departure_s=300, move_margin_db=0, move_margin_decay_s=1)
    return ServiceContext(cfg, open_database(cfg.database.url), Metrics(), tracker, DomainLock())
