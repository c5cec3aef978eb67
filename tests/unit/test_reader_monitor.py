"""Reader states -> reader_up, the retained status (once per change), down and silent alerts."""

from __future__ import annotations

from typing import Any

from readers.base import ReaderState
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics
from rfidd.reader_monitor import ReaderMonitor


class Rig:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.metrics.init_readers([("dock", [1])])
        self.published: list[tuple[str, str]] = []
        self.alerts: list[dict[str, Any]] = []
        self.monitor = ReaderMonitor(
            self.metrics, publish_status=lambda r, p: self.published.append((r, p)),
            make_alert=lambda kind, body, key: {"type": kind, "key": key, **body},
            emit_alerts=self.alerts.extend, down_alert_s=60.0,
            silent_after_s={"dock": 600.0}, drivers={})
        self.intake = IngestQueue(self.metrics, on_state=self.monitor.on_state,
                                  activity=self.monitor.activity)

    def value(self, name: str, **labels: str) -> float | None:
        v: float | None = self.metrics.registry.get_sample_value(name, labels)
        return v


def test_status_published_once_per_change_and_up_only_when_reading() -> None:
    rig = Rig()
    for st in (ReaderState.CONNECTING, ReaderState.OFFLINE, ReaderState.CONNECTING,
               ReaderState.CONNECTED_NOT_READING, ReaderState.ONLINE,
               ReaderState.CONNECTED_NOT_READING, ReaderState.OFFLINE, ReaderState.CONNECTING):
        rig.intake.on_state("dock", st, "why")
        up = rig.value("rfidd_reader_up", reader="dock")
        assert up == (1.0 if st is ReaderState.ONLINE else 0.0)
        assert rig.value("rfidd_reader_state", reader="dock", state=st.value) == 1.0
    assert [p for _, p in rig.published] == [
        "offline", "connected_not_reading", "online", "connected_not_reading", "offline"]


def test_down_alert_covers_connected_not_reading_once_per_episode() -> None:
    rig = Rig()
    rig.intake.on_state("dock", ReaderState.CONNECTED_NOT_READING, "ROSpec Inactive")
    since = rig.monitor.activity["dock"].since
    rig.monitor.check(since + 59)
    assert not rig.alerts
    rig.monitor.check(since + 61)
    rig.monitor.check(since + 120)
    assert [(a["type"], a["state"]) for a in rig.alerts] == [
        ("reader_down", "connected_not_reading")]
    rig.intake.on_state("dock", ReaderState.ONLINE, "inventorying")
    rig.monitor.check(since + 200)
    assert len(rig.alerts) == 1


def test_silent_is_an_anomaly_and_one_alert_per_silence() -> None:
    rig = Rig()
    rig.intake.on_state("dock", ReaderState.ONLINE, "inventorying")
    start = rig.monitor.activity["dock"].last_report
    rig.monitor.check(start + 599)
    assert not rig.alerts and not rig.monitor.is_silent("dock")
    rig.monitor.check(start + 601)
    rig.monitor.check(start + 900)
    assert [a["type"] for a in rig.alerts] == ["reader_silent"]
    assert rig.monitor.is_silent("dock")
    assert rig.value("rfidd_reader_anomalies_total", reader="dock", kind="silent") == 1.0
    assert rig.value("rfidd_reader_up", reader="dock") == 1.0  # still up: not a fault
    rig.monitor.activity["dock"].last_report = start + 1000  # a tag again
    assert not rig.monitor.is_silent("dock")
    rig.monitor.check(start + 1700)  # quiet once more: a new episode
    assert [a["type"] for a in rig.alerts] == ["reader_silent"] * 2
    assert rig.monitor.snapshot()["dock"]["silent"] is True


def test_intake_remembers_recent_tids_per_epc_bounded() -> None:
    from readers.base import TagRead
    from rfidd.intake import TidMemory

    rig = Rig()
    epc = "3034E57E0400194000000003"
    rig.intake.on_reads("dock", [TagRead(epc, "dock", 1, -50.0, 1.0, tid="E2801160AAAA"),
                                 TagRead(epc, "dock", 1, -51.0, 1.0, tid="E2801160BBBB"),
                                 TagRead(epc, "dock", 1, -52.0, 1.0, tid="E2801160AAAA"),
                                 TagRead("30340000", "dock", 1, -50.0, 1.0)])
    assert rig.intake.tids.of(epc.lower()) == ("E2801160AAAA", "E2801160BBBB")
    assert rig.intake.tids.of("30340000") == ()
    memory = TidMemory(max_epcs=2)
    for i in range(3):
        memory.record([TagRead(f"{i:04X}", "r", 1, None, 0.0, tid=f"T{i}")])
    assert memory.of("0000") == () and memory.of("0002") == ("T2",)


def test_alerts_not_queued_while_the_database_is_down_are_raised_next_turn() -> None:
    from rfidd.health import ServiceUnavailable

    rig = Rig()
    down = [True]

    def emit(alerts: list[Any]) -> None:
        if down[0]:
            raise ServiceUnavailable("database down")
        rig.alerts.extend(alerts)

    rig.monitor._emit = emit
    rig.intake.on_state("dock", ReaderState.OFFLINE, "connection refused")
    since = rig.monitor.activity["dock"].since
    rig.monitor.check(since + 61)
    assert not rig.alerts and not rig.monitor.activity["dock"].down_alerted
    down[0] = False
    rig.monitor.check(since + 62)
    assert [a["type"] for a in rig.alerts] == ["reader_down"]


def test_reads_per_second_per_reader_over_the_window() -> None:
    from readers.base import TagRead
    from rfidd import reader_monitor

    rig = Rig()
    rig.intake.on_state("dock", ReaderState.ONLINE, "inventorying")
    assert rig.monitor.snapshot()["dock"]["reads_per_s"] is None  # no tick yet
    rig.monitor.check(1000.0)
    for _ in range(3):
        rig.intake.on_reads("dock", [TagRead(f"{i:04X}", "dock", 1, -50.0, 0.0)
                                     for i in range(100)])
    assert rig.monitor.reads_per_s("dock", now=1005.0) == 60.0  # 300 reads in 5 s
    for t in range(1001, 1031):  # then nothing for 30 s: the window forgets the burst
        rig.monitor.check(float(t))
    assert rig.monitor.reads_per_s("dock", now=1030.0) == 0.0
    assert 2 <= len(rig.monitor._rates["dock"]) <= reader_monitor.RATE_WINDOW_S + 2


def test_a_reader_that_read_and_went_quiet_says_for_how_long() -> None:
    """A reader that lost its ROSpec stays `online` until the driver's verify finds it; in that
    window `rfidd readers` says "no tag for N s" instead of a plain online."""
    from readers.base import TagRead
    from rfidd import reader_monitor

    rig = Rig()
    now = [1000.0]
    rig.monitor._clock = lambda: now[0]
    rig.intake.on_state("dock", ReaderState.ONLINE, "inventorying")
    rig.monitor.activity["dock"].last_report = 900.0  # online long ago, never a tag
    assert rig.monitor.snapshot()["dock"]["no_tag_s"] is None  # an empty field is not quiet
    rig.intake.on_reads("dock", [TagRead("ABCD", "dock", 1, -50.0, 0.0)])
    rig.monitor.activity["dock"].last_report = 1000.0
    now[0] = 1000.0 + reader_monitor.QUIET_AFTER_S - 1
    assert rig.monitor.snapshot()["dock"]["no_tag_s"] is None
    now[0] = 1012.4
    assert rig.monitor.snapshot()["dock"]["no_tag_s"] == 12
    rig.intake.on_state("dock", ReaderState.OFFLINE, "gone")
    assert rig.monitor.snapshot()["dock"]["no_tag_s"] is None  # its state says it already
