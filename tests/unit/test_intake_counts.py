"""The intake's per-read bookkeeping (counts per read point, TIDs) whichever way it is given the
counts, and the benchmark's CPU split."""

from __future__ import annotations

import threading

from waits import wait_until

from readers.base import TagRead
from rfidd.benchmark import cpu_split
from rfidd.intake import IngestQueue
from rfidd.metrics import Metrics


def _reads(tids: list[str | None]) -> list[TagRead]:
    return [TagRead(f"E2{k:022X}", "dock", 1 + k % 2, -50.0, 1e9 + k, 1, tid)
            for k, tid in enumerate(tids)]


def _counts(m: Metrics) -> dict[str, float | None]:
    get = m.registry.get_sample_value
    return {a: get("rfidd_reads_total", {"reader": "dock", "antenna": a}) for a in ("1", "2")}


def test_counts_given_by_the_reader_host_match_those_counted_here() -> None:
    here, given = IngestQueue(Metrics()), IngestQueue(Metrics())
    reads = _reads([None] * 5)
    here.on_reads("dock", reads)
    given.on_reads("dock", reads, {1: 3, 2: 2})
    assert _counts(here.metrics) == _counts(given.metrics) == {"1": 3.0, "2": 2.0}
    assert here.q.get_nowait() == given.q.get_nowait() == ("dock", reads)
    assert here.activity["dock"].reads == given.activity["dock"].reads == 5


def test_tids_recorded_when_any_read_has_one_and_only_then() -> None:
    q = IngestQueue(Metrics())
    q.on_reads("dock", _reads([None, None, None]))
    assert all(q.tids.of(f"E2{k:022X}") == () for k in range(3))
    q.on_reads("dock", _reads([None, "E280AA", None]), {1: 2, 2: 1})
    assert q.tids.of(f"E2{1:022X}") == ("E280AA",)
    assert q.tids.of(f"E2{0:022X}") == ()


def test_a_tag_read_is_a_typed_tuple_with_its_defaults() -> None:
    r = TagRead("E2", "dock", 1, None, 5.0)
    assert (r.seen_count, r.tid) == (1, None)
    assert tuple.__new__(TagRead, ("E2", "dock", 1, None, 5.0, 1, None)) == r


def test_cpu_split_names_this_process_threads_and_keeps_the_sums() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=spin, name="spinner", daemon=True)
    t.start()
    try:
        a = cpu_split.sample(0.0, None, None)
        tid = t.native_id or -1
        start = a.threads.get(tid, (0.0, 0.0))[0]
        wait_until(lambda: cpu_split.threads_here()[tid][0] >= start + 0.05,
                   "the spinner to run 50 ms of CPU", timeout=60.0)
        b = cpu_split.sample(1.0, None, None)
        out = cpu_split.split(a, b)
    finally:
        stop.set()
        t.join()
    assert out["thread:spinner"] >= 0.05
    assert out["sim"] == out["reader_host"] == 0.0
    assert out["cores"] >= 1 and out["others"] >= 0
    assert out["others"] == max(0.0, out["machine"] - out["daemon"])
    assert cpu_split._kind("Thread-12 (run)") == "Thread (run)"
    assert cpu_split._kind("reader-host-intake") == "reader-host-intake"
