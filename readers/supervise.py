"""Supervision of one reader connection: reconnect with backoff, watchdog, handshake timeout.

Generic over the transport: a driver supplies a `connect()` that returns a `Session` (an open
connection whose I/O runs on its own thread, e.g. sllurp's or a serial reader loop) and the
supervisor owns the policy every driver needs in the field and no library provides. One thread per
reader; it only sleeps on Events, so `stop()` is prompt. It does not poll: a session wakes it
whenever something it watches changes (handshake done, reading or not, failure, its I/O thread
ended), and it sleeps until the next deadline it keeps (handshake, not-reading, watchdog), at
most POLL_S, so an idle site's readers cost nothing between keepalives.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from readers.base import ReaderSink, ReaderState

log = logging.getLogger(__name__)

# Module constants so tests can patch them to 0 (monkeypatch.setattr(supervise, "BACKOFF_...")).
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_JITTER = 0.2  # +0..20 % of the delay: readers restarted together do not reconnect together
POLL_S = 5.0
"""The longest the supervisor sleeps between two looks at a session that did not wake it (a
safety net: sessions wake it on every change; tests set it small with fake clocks)."""
HANG_MARGIN_S = 30.0
"""How late past its next expected turn the supervisor loop may be before it counts as hung."""
WATCHDOG_FACTOR = 3.0  # silence for 3 keepalive periods forces a reconnect
NOT_READING_RECONNECT_S = 60.0  # connected but not inventorying this long: start afresh


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: initial, doubling up to `maximum`, plus random jitter."""

    initial_s: float | None = None
    maximum_s: float | None = None
    jitter: float | None = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        initial = BACKOFF_INITIAL_S if self.initial_s is None else self.initial_s
        maximum = BACKOFF_MAX_S if self.maximum_s is None else self.maximum_s
        jitter = BACKOFF_JITTER if self.jitter is None else self.jitter
        base = min(maximum, initial * (2.0 ** min(attempt, 30)))
        return base + base * jitter * rng.random()


class Session(Protocol):
    """One open connection to a reader, as seen by the supervisor."""

    def ready(self) -> bool:
        """The handshake is complete (the reader may not be inventorying yet)."""

    def reading(self) -> bool:
        """The reader is inventorying (for LLRP: its ROSpec is confirmed Active)."""

    def not_reading_reason(self) -> str:
        """Why a connected session is not reading (for humans), or ''."""

    def alive(self) -> bool:
        """The session's I/O thread is still running."""

    def failure(self) -> str | None:
        """Why the session cannot go on (connection closed, fatal deviation), or None."""

    def last_activity(self) -> float:
        """Monotonic time of the last message received from the reader."""

    def close(self, polite: bool) -> None:
        """End the session; `polite` asks the reader to stop first (on a clean stop)."""


class Supervisor:
    """Keeps one reader connected until `stop()`, reporting state changes to the sink."""

    def __init__(
        self,
        name: str,
        sink: ReaderSink,
        connect: Callable[[], Session],
        *,
        watchdog_s: float | None,
        handshake_timeout_s: float,
        backoff: Backoff | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        poll_s: float | None = None,
        not_reading_reconnect_s: float | None = None,
    ) -> None:
        self.name = name
        self._sink = sink
        self._connect = connect
        self._watchdog_s = watchdog_s
        self._handshake_s = handshake_timeout_s
        self._backoff = backoff or Backoff()
        self._stop = stop_event or threading.Event()
        self._wake = threading.Event()
        self._clock = clock
        self._rng = random.Random(seed)
        self._poll_s = poll_s
        self._not_reading_s = not_reading_reconnect_s
        self._state = ReaderState.OFFLINE
        self._thread: threading.Thread | None = None
        self.reconnects = 0  # sessions that ended for a reason other than stop()
        self.last_reason = ""
        self._due = clock() + handshake_timeout_s + HANG_MARGIN_S  # next turn expected by

    def is_alive(self) -> bool:
        """The supervisor thread runs (False before start, after stop, or if it died)."""
        return self._thread is not None and self._thread.is_alive()

    def set_watchdog(self, seconds: float | None) -> None:
        """A new watchdog period (the reader's family asked for another keepalive)."""
        self._watchdog_s = seconds
        self._wake.set()  # the deadline it sleeps until may be sooner now

    def hung_for(self) -> float:
        """Seconds the loop is late past the turn it announced (0: on time). A driver call
        that never returns shows here; the daemon stops feeding the systemd watchdog then."""
        if not self.is_alive():
            return 0.0
        return max(0.0, self._clock() - self._due)

    def _expect(self, within_s: float) -> None:
        self._due = self._clock() + within_s + HANG_MARGIN_S

    @property
    def state(self) -> ReaderState:
        return self._state

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=f"reader-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("reader %s: supervisor did not stop within %.1fs", self.name, timeout)

    def wake(self) -> None:
        """Sessions call this when something happened, so the supervisor reacts at once."""
        self._wake.set()

    def _set_state(self, state: ReaderState, reason: str) -> None:
        if state is self._state:
            return
        self._state = state
        log.info("reader %s: %s (%s)", self.name, state.value, reason)
        try:
            self._sink.on_state(self.name, state, reason)
        except Exception:
            log.exception("reader %s: sink.on_state raised", self.name)

    def _poll(self) -> float:
        return POLL_S if self._poll_s is None else self._poll_s

    def _run(self) -> None:
        attempt = 0
        reason = "starting"
        while not self._stop.is_set():
            self._set_state(ReaderState.CONNECTING, reason)
            self._expect(self._handshake_s)
            session: Session | None = None
            try:
                session = self._connect()
            except Exception as exc:
                reason = f"connect failed: {exc}"
            if session is not None:
                reason, was_online = self._watch(session)
                if was_online:
                    attempt = 0
                self._expect(self._handshake_s)
                try:
                    session.close(polite=self._stop.is_set())
                except Exception:
                    log.exception("reader %s: closing the session raised", self.name)
            if self._stop.is_set():
                break
            self.reconnects += 1
            self.last_reason = reason
            self._set_state(ReaderState.OFFLINE, reason)
            delay = self._backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("reader %s: reconnecting in %.2fs", self.name, delay)
            self._expect(delay)
            self._stop.wait(delay)
        self._set_state(ReaderState.OFFLINE, "stopped")

    def _watch(self, session: Session) -> tuple[str, bool]:
        """Wait until the session fails; returns (reason, whether it ever got ONLINE).

        Connected is not online: after the handshake the state is CONNECTED_NOT_READING until
        the session says the reader is inventorying, and goes back there whenever it stops."""
        started = self._clock()
        connected = False
        online = False
        not_reading_since = started
        wait = 0.0  # the first look at once
        while not self._stop.is_set():
            self._expect(wait)
            self._wake.wait(wait)
            self._wake.clear()  # before looking: a change after this wakes the next wait
            if self._stop.is_set():
                break
            failure = session.failure()
            if failure:
                return failure, online
            if not session.alive():
                return "driver thread died", online
            now = self._clock()
            wait = self._poll()
            if not connected:
                if session.ready():
                    connected = True
                    not_reading_since = now
                elif now - started > self._handshake_s:
                    return f"handshake timed out after {self._handshake_s:g}s", online
                else:
                    wait = min(wait, started + self._handshake_s - now)
            if connected:
                if session.reading():
                    if self._state is not ReaderState.ONLINE:
                        online = True
                        self._set_state(ReaderState.ONLINE, "inventorying")
                else:
                    limit = (NOT_READING_RECONNECT_S if self._not_reading_s is None
                             else self._not_reading_s)
                    if self._state is not ReaderState.CONNECTED_NOT_READING:
                        not_reading_since = now
                        self._set_state(ReaderState.CONNECTED_NOT_READING,
                                        session.not_reading_reason()
                                        or "connected, reader not inventorying")
                    elif now - not_reading_since > limit:
                        return (f"connected but not inventorying for "
                                f"{now - not_reading_since:.1f}s"), online
                    wait = min(wait, not_reading_since + limit - now)
            if self._watchdog_s is not None and connected:
                silent = now - session.last_activity()
                if silent > self._watchdog_s:
                    return (f"reader silent for {silent:.1f}s "
                            f"(watchdog {self._watchdog_s:g}s)"), online
                wait = min(wait, self._watchdog_s - silent)
            # Just past the deadline, so that the check above sees it passed.
            wait = max(0.0, wait) + 0.001
        return "stopped", online
