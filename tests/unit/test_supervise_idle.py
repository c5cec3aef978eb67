"""The reader supervisor does not poll: it sleeps until a session wakes it or until the next
deadline it keeps (handshake, watchdog), however long POLL_S is. Real clock, no sockets."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from readers import supervise
from readers.base import ReaderState
from readers.supervise import Backoff, Supervisor
from readers.threads import name_os_threads, os_name
from simulator.llrp.testing import RecordingSink, wait_until


class WakingSession:
    """A session that wakes its supervisor on every change, as the real ones do."""

    def __init__(self, sup: list[Supervisor]) -> None:
        self._sup = sup
        self.is_ready = False
        self.why: str | None = None
        self.is_alive = True
        self.last = time.monotonic()

    def change(self, **attrs: object) -> None:
        for k, v in attrs.items():
            setattr(self, k, v)
        self._sup[0].wake()

    def ready(self) -> bool:
        return self.is_ready

    def reading(self) -> bool:
        return self.is_ready

    def not_reading_reason(self) -> str:
        return ""

    def alive(self) -> bool:
        return self.is_alive

    def failure(self) -> str | None:
        return self.why

    def last_activity(self) -> float:
        return self.last

    def close(self, polite: bool) -> None:
        pass


@pytest.fixture(autouse=True)
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "POLL_S", 3600.0)  # only wakes and deadlines can act
    monkeypatch.setattr(supervise, "BACKOFF_INITIAL_S", 0.0)
    monkeypatch.setattr(supervise, "BACKOFF_JITTER", 0.0)


def start(watchdog_s: float | None, handshake_s: float
          ) -> tuple[Supervisor, list[WakingSession], RecordingSink]:
    holder: list[Supervisor] = []
    sessions: list[WakingSession] = []
    sink = RecordingSink()

    def connect() -> WakingSession:
        s = WakingSession(holder)
        sessions.append(s)
        return s

    sup = Supervisor("r", sink, connect, watchdog_s=watchdog_s, handshake_timeout_s=handshake_s,
                     backoff=Backoff(initial_s=0.0, jitter=0.0))
    holder.append(sup)
    sup.start()
    return sup, sessions, sink


@pytest.fixture
def stops() -> Iterator[list[Supervisor]]:
    sups: list[Supervisor] = []
    yield sups
    for s in sups:
        s.stop(5.0)


def test_wakes_act_at_once_without_polling(stops: list[Supervisor]) -> None:
    sup, sessions, _sink = start(watchdog_s=None, handshake_s=3600.0)
    stops.append(sup)
    wait_until(lambda: len(sessions) == 1)
    sessions[0].change(is_ready=True)
    wait_until(lambda: sup.state is ReaderState.ONLINE)
    sessions[0].change(why="connection closed")
    wait_until(lambda: len(sessions) == 2)
    sessions[1].change(is_ready=True)
    wait_until(lambda: sup.state is ReaderState.ONLINE)
    sessions[1].change(is_alive=False)
    wait_until(lambda: len(sessions) == 3)
    assert sup.last_reason == "driver thread died"
    sup.stop(5.0)  # stop wakes it too: prompt even with an hour-long poll
    assert not sup.is_alive()


def test_the_watchdog_and_handshake_deadlines_need_no_wake(stops: list[Supervisor]) -> None:
    sup, sessions, _sink = start(watchdog_s=0.3, handshake_s=0.3)
    stops.append(sup)
    wait_until(lambda: len(sessions) == 2)  # the first never completed its handshake
    assert sup.last_reason == "handshake timed out after 0.3s"
    sessions[1].change(is_ready=True)
    wait_until(lambda: sup.state is ReaderState.ONLINE)
    wait_until(lambda: len(sessions) == 3)  # silent: the watchdog's deadline, no wake
    assert sup.last_reason.startswith("reader silent for")


def test_a_reader_that_talks_keeps_its_watchdog_quiet(stops: list[Supervisor]) -> None:
    sup, sessions, _sink = start(watchdog_s=0.4, handshake_s=3600.0)
    stops.append(sup)
    wait_until(lambda: len(sessions) == 1)
    sessions[0].change(is_ready=True)
    wait_until(lambda: sup.state is ReaderState.ONLINE)
    # Keepalives, as a reader sends them (they wake nothing), until the supervisor took three
    # more turns at its watchdog deadlines (each turn announces a new due time).
    turns: set[float] = {sup._due}
    deadline = time.monotonic() + 30
    while len(turns) < 4 and time.monotonic() < deadline:
        sessions[0].last = time.monotonic()
        turns.add(sup._due)
        time.sleep(0.02)
    assert len(turns) >= 4
    assert len(sessions) == 1 and sup.state is ReaderState.ONLINE


def test_os_thread_names_follow_python_names() -> None:
    name_os_threads()
    done = threading.Event()
    seen: list[str] = []

    def body() -> None:
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())
        done.wait(5)

    t = threading.Thread(target=body, name="reader-a-long-thread-name", daemon=True)
    t.start()
    wait_until(lambda: seen)
    done.set()
    t.join(5)
    assert seen == [os_name("reader-a-long-thread-name").decode()] == ["reader-a-long-t"]
    main = Path(f"/proc/self/task/{os.getpid()}/comm").read_text().strip()
    assert main != "MainThread"  # the process keeps its own name
