"""Benchmark: reads/s sustained by N supervised LLRP drivers against N simulated readers, and the
time each fault takes to recover from (fault injected -> first read after reconnect).

    python -m simulator.bench_llrp --readers 20 --seconds 5

Not a test: figures depend on the machine. Backoff is shortened so recovery measures the driver
(detection + reconnect + handshake), not the production backoff policy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from readers import supervise
from readers.base import ReaderState
from readers.llrp import LlrpReader
from simulator.llrp import SimulatedReader, StaticField
from simulator.llrp.testing import RecordingSink, wait_until


def _field(i: int, tags: int) -> StaticField:
    return StaticField.of_hex({ant: [f"30{i:02X}{ant:02X}E57E0400194000{n:06X}"
                                     for n in range(tags)] for ant in (1, 2)})


def throughput(n: int, seconds: float, rate: float, tags: int) -> float:
    sims = [SimulatedReader(f"r{i:02d}", _field(i, tags), antennas=[1, 2], reads_per_s=rate,
                            seed=i) for i in range(n)]
    sink = RecordingSink(keep_reads=False)
    drivers: list[LlrpReader] = []
    try:
        for sim in sims:
            sim.start()
            drivers.append(LlrpReader(sim.name, "127.0.0.1",
                                      {"port": sim.port, "report_every_n_tags": 100,
                                       "report_timeout_ms": 200}, [1, 2], sink))
        for d in drivers:
            d.start()
        if not wait_until(lambda: all(d.state is ReaderState.ONLINE for d in drivers), 60):
            raise SystemExit("readers did not all come online")
        c0, t0 = sink.count(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = sink.count(), time.monotonic()
        sent = sum(s.stats.tags_reported for s in sims)
        lost = sent - c1
        print(f"{n} readers x {rate:.0f} reads/s asked: {(c1 - c0) / (t1 - t0):,.0f} tag reports/s"
              f" ingested (in flight at the end: {lost})")
        return (c1 - c0) / (t1 - t0)
    finally:
        for d in drivers:
            d.stop()
        for sim in sims:
            sim.stop()


def _error_then_drop(sim: SimulatedReader) -> None:
    sim.answer_with_error("ADD_ROSPEC")
    sim.drop_connection()


FAULTS: dict[str, Callable[[SimulatedReader], None]] = {
    "drop connection": lambda s: s.drop_connection(),
    "silent reader (watchdog)": lambda s: s.go_silent(),
    "huge frame": lambda s: s.send_garbage("huge_frame"),
    "random garbage": lambda s: s.send_garbage("random", 256),
    "other client holds it 1s": lambda s: s.occupy(1.0),
    "reboot 2s": lambda s: s.reboot(2.0),
    "ERROR_MESSAGE to ADD_ROSPEC": lambda s: _error_then_drop(s),
}


def recovery(keepalive_s: float) -> None:
    sim = SimulatedReader("bench", _field(0, 100), antennas=[1, 2], reads_per_s=1000)
    sim.start()
    sink = RecordingSink(keep_reads=False)
    driver = LlrpReader("bench", "127.0.0.1",
                        {"port": sim.port, "keepalive_s": keepalive_s, "report_every_n_tags": 20,
                         "report_timeout_ms": 50, "handshake_timeout_s": 2.0}, [1, 2], sink)
    driver.start()
    try:
        for name, fault in FAULTS.items():
            _measure(name, fault, sim, sink, driver)
    finally:
        driver.stop()
        sim.stop()


def _measure(name: str, fault: Callable[[SimulatedReader], None], sim: SimulatedReader,
             sink: RecordingSink, driver: LlrpReader) -> None:
    if not wait_until(lambda: driver.state is ReaderState.ONLINE, 30):
        print(f"  {name}: not online before the fault")
        return
    time.sleep(0.3)
    t0 = time.monotonic()
    fault(sim)

    def read_after_recovery() -> bool:
        # reads right after the fault may be the last ones of the old connection: count one
        # that arrived after the driver last went online, after the fault
        online_at = max((t for _, st, _, t in sink.states if st is ReaderState.ONLINE),
                        default=t0)
        return driver.state is ReaderState.ONLINE and \
            sink.last_read_at.get("bench", 0.0) > max(online_at, t0)

    ok = wait_until(read_after_recovery, 30)
    dt = sink.last_read_at.get("bench", 0.0) - t0
    print(f"  {name:32s} {'recovered in' if ok else 'NOT recovered after'} {dt:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=1100.0, help="reads/s per simulated reader")
    ap.add_argument("--tags", type=int, default=300, help="tags per antenna")
    ap.add_argument("--keepalive", type=float, default=0.5, help="keepalive period (s)")
    args = ap.parse_args()
    supervise.BACKOFF_INITIAL_S = 0.05
    supervise.BACKOFF_MAX_S = 1.0
    for n in sorted({1, args.readers}):
        throughput(n, args.seconds, args.rate, args.tags)
    print(f"recovery (keepalive {args.keepalive}s, watchdog {3 * args.keepalive}s, backoff from"
          f" {supervise.BACKOFF_INITIAL_S}s):")
    recovery(args.keepalive)


if __name__ == "__main__":
    main()
