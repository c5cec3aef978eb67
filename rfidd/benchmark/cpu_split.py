"""Where the CPU of an end-to-end run went: per process (the simulators, the reader host, the
daemon) and per thread of the daemon, with the machine's total, from the kernel's accounting.

On a 2-core machine that others share, a run's figure means little without this: if the
simulators and other jobs take most of the cores, the daemon's ceiling is the machine's, not
its own. Per thread, the schedstat's second field (time spent runnable but not running) says
whether a thread waited for a core (the machine is short of CPU); a thread that is neither
running nor runnable waits for the GIL, a lock or I/O.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a process that ends meanwhile is skipped)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue
    return out


def process_cpu_s(pid: int | None, children: bool = True) -> float:
    """User + system CPU seconds of `pid` (and its descendants); 0.0 if unknown or gone."""
    if pid is None:
        return 0.0
    total = 0
    for p in tree(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total * TICK_S


def machine_busy_s() -> tuple[float, int]:
    """CPU seconds every core of the machine has been busy (not idle, not waiting on I/O),
    and the number of cores."""
    with open("/proc/stat") as f:
        first = f.readline().split()
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    guest = sum(ticks[8:10]) if len(ticks) > 9 else 0  # counted in user/nice already
    return (sum(ticks) - idle - guest) * TICK_S, os.cpu_count() or 1


def threads_here() -> dict[int, tuple[float, float]]:
    """Per thread of this process (native id): (CPU s, s runnable but waiting for a core)."""
    out: dict[int, tuple[float, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            run_ns, wait_ns = (int(x) for x in (task / "schedstat").read_text().split()[:2])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        out[int(task.name)] = (run_ns / 1e9, wait_ns / 1e9)
    return out


@dataclass
class Sample:
    at: float
    machine_s: float
    cores: int
    sim_s: float
    host_s: float
    self_s: float
    threads: dict[int, tuple[float, float]] = field(default_factory=dict)


def sample(at: float, sim_pid: int | None, host_pid: int | None) -> Sample:
    """The counters now (`at`: the caller's monotonic clock)."""
    machine, cores = machine_busy_s()
    return Sample(at, machine, cores, process_cpu_s(sim_pid), process_cpu_s(host_pid),
                  process_cpu_s(os.getpid(), children=False), threads_here())


def split(a: Sample, b: Sample) -> dict[str, float]:
    """Cores used between two samples: `machine` (all of it, of `cores`), `sim`, `reader_host`,
    `daemon` (this process: the daemon and the bench's own MQTT subscriber), `others` (every
    other process of the machine), and `thread:<name>` / `wait:<name>` per thread of this
    process (CPU / runnable but not running; threads of one name summed)."""
    dt = max(b.at - a.at, 1e-9)
    out = {
        "cores": float(b.cores),
        "machine": (b.machine_s - a.machine_s) / dt,
        "sim": (b.sim_s - a.sim_s) / dt,
        "reader_host": (b.host_s - a.host_s) / dt,
        "daemon": (b.self_s - a.self_s) / dt,
    }
    out["others"] = max(0.0, out["machine"] - out["sim"] - out["reader_host"] - out["daemon"])
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    for tid, (run1, wait1) in b.threads.items():
        run0, wait0 = a.threads.get(tid, (0.0, 0.0))
        name = _kind(names.get(tid, "other"))
        out[f"thread:{name}"] = out.get(f"thread:{name}", 0.0) + (run1 - run0) / dt
        out[f"wait:{name}"] = out.get(f"wait:{name}", 0.0) + (wait1 - wait0) / dt
    return out


def _kind(name: str) -> str:
    """A thread's name without its number ("Thread-12 (run)" -> "Thread (run)")."""
    head, sep, rest = name.partition("-")
    if sep and rest.split(" ", 1)[0].isdigit():
        tail = rest.split(" ", 1)
        return head + (" " + tail[1] if len(tail) > 1 else "")
    return name
