"""Database health and the domain-state lock: what lets staff get a fast 503, not a hang.

The ingest thread is the one writer that must never give up: when the database fails (locked,
disk full, PostgreSQL restarting) it retries with backoff and marks `DatabaseHealth` down. Staff
and HQ writes check it first and answer "unavailable" at once instead of queueing behind a
failing database; reads keep queueing in the bounded ingest queue and land once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from rfidd.metrics import Metrics

T = TypeVar("T")


class ServiceUnavailable(Exception):
    """A write that cannot be done now (database down, domain state busy): HTTP 503."""


@dataclass(frozen=True, slots=True)
class HealthState:
    up: bool
    reason: str
    since: float
    errors: int


class DatabaseHealth:
    """Up or down, why and since when; written by whoever sees a database error."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._state = HealthState(True, "", time.time(), 0)

    @property
    def state(self) -> HealthState:
        return self._state  # one reference read: no lock needed

    @property
    def up(self) -> bool:
        return self._state.up

    def failed(self, reason: str) -> bool:
        """Record an error; True when this turned the database from up to down."""
        with self._mu:
            st = self._state
            self._state = HealthState(False, reason, st.since if not st.up else time.time(),
                                      st.errors + 1)
            return st.up

    def recovered(self) -> float | None:
        """The database answered again; how long it was down (None if it was up)."""
        with self._mu:
            st = self._state
            if st.up:
                return None
            now = time.time()
            self._state = HealthState(True, "", now, st.errors)
            return now - st.since

    def check(self) -> None:
        """Raise ServiceUnavailable while the database is down (a staff write answers 503)."""
        st = self._state
        if not st.up:
            raise ServiceUnavailable(f"database unavailable since {time.ctime(st.since)}, "
                                     f"retrying: {st.reason}")


class DomainLock:
    """The domain-state lock (re-entrant). Staff and HQ calls enter it with `with lock:`, which
    gives up after `timeout_s` with ServiceUnavailable rather than hanging a request behind a
    slow batch; the ingest thread, which must not give up, uses `lock.waiting()`."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self._lock = threading.RLock()
        self.timeout_s = timeout_s
        self._turn = threading.Condition(threading.Lock())
        self._waiters = 0  # threads blocked in waiting()
        self._entries = 0  # holds taken through waiting()

    def __enter__(self) -> DomainLock:
        if not self._lock.acquire(timeout=self.timeout_s):
            raise ServiceUnavailable(
                f"busy: the store's state is being updated (waited {self.timeout_s:.1f} s); "
                "try again")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Hold the lock, waiting as long as it takes (the ingest thread)."""
        with self._turn:
            self._waiters += 1
        try:
            self._lock.acquire()
        finally:
            with self._turn:
                self._waiters -= 1
                self._entries += 1
                self._turn.notify_all()
        try:
            yield
        finally:
            self._lock.release()

    def give_way(self, timeout_s: float = 0.5) -> bool:
        """Between two chunks of a long staff operation (not holding the lock): if the ingest
        is waiting for the lock, wait until it got it, so a loop of short holds cannot starve
        it (a released lock is usually re-taken by the releasing thread). True if it did."""
        with self._turn:
            if self._waiters == 0:
                return False
            entries = self._entries
            return self._turn.wait_for(lambda: self._entries != entries, timeout_s)


def retry_database(
    fn: Callable[[], T], what: str, *, health: DatabaseHealth, metrics: Metrics,
    stop: threading.Event, initial_s: float, max_s: float, log: logging.Logger,
    on_database: Callable[[bool, str], None] | None = None,
    on_error: Callable[[], None] | None = None, on_wait: Callable[[], None] | None = None,
) -> T | None:
    """Run `fn` until the database takes it or `stop` is set (None: given up), with backoff
    from `initial_s` to `max_s`. No lock is held while waiting. Marks `health` down and up,
    counts each error (`on_error` too), calls `on_database(up, reason)` on every change and
    `on_wait` after each wait (the ingest's heartbeat); logs on the caller's `log`."""
    delay = initial_s
    while True:
        try:
            out = fn()
        except DBAPIError as exc:
            reason = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:200]
            if on_error is not None:
                on_error()
            metrics.database_errors.inc()
            metrics.database_up.set(0)
            before = health.state
            if health.failed(reason):
                log.error("database unavailable (%s); retrying %s with backoff", reason,
                          what)
                if on_database is not None:
                    on_database(False, reason)
            elif reason != before.reason:  # e.g. cut off, then a read-only standby
                log.warning("database still unavailable, now: %s", reason)
                if on_database is not None:
                    on_database(False, reason)
            if stop.is_set():
                log.error("database error while stopping: %s lost: %s", what, reason)
                return None
            stop.wait(delay)
            if on_wait is not None:
                on_wait()  # waiting on the database, not hung
            delay = min(delay * 2, max_s)
            continue
        down_s = health.recovered()
        if down_s is not None:
            metrics.database_up.set(1)
            log.warning("database back after %.1f s; writing what waited", down_s)
            if on_database is not None:
                on_database(True, f"back after {down_s:.1f} s")
        return out
