"""`rfidd bench`'s idle figures: the daemon as `rfidd run` runs it (HTTP API on, MQTT on, the
LLRP readers in its reader host child) with 4 connected readers that read nothing.

CPU comes from each thread's /proc/PID/task/TID/schedstat (nanoseconds on the CPU, and how many
times it was scheduled: its wake-ups), over a window long enough for rare periodic work to
show. A thread that ended within the window takes its time with it; the process totals
(/proc/PID/stat, clock ticks, which count dead threads too, but only to 1/CLK_TCK s at each
end) catch it: `cpu_ratio` is the threads' sum unless a thread ended or the ticks exceed that
sum by more than their resolution, and then the larger of the two. RSS is each
process's VmRSS (summed: the child counts), with its Pss and anonymous part from
/proc/PID/smaps_rollup. Threads carry their Python names at the OS level
(readers.threads.name_os_threads), so each figure is attributed to a thread name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfidd.benchmark.cpu_split import tree

SETTLE_S = 3.0
"""After READY=1 and every reader connected: handshakes done, start-up work over."""
START_TIMEOUT_S = 120.0

_RUN = r"""
import sys
from rfidd.config import Config
cfg = Config.model_validate_json(sys.stdin.read())
sys.stdin.close()
from rfidd.cli import serve
serve(cfg, "warning")
"""


@dataclass
class ProcessMem:
    rss_mib: float
    pss_mib: float
    anon_mib: float


@dataclass
class ThreadCpu:
    process: str
    thread: str
    count: int
    cpu_ms_per_s: float
    """Milliseconds on the CPU per second of window: 10.0 is 1 % of a core."""
    wakeups_per_s: float


@dataclass
class IdleFigures:
    seconds: float
    rss_mib: float
    cpu_ratio: float
    threads_cpu_ratio: float
    """The per-thread sum (threads alive at the window's end)."""
    ticks_cpu_ratio: float
    """The processes' clock ticks (dead threads included; 1 tick = 1/CLK_TCK s)."""
    wakeups_per_s: float
    threads_started: int
    threads_ended: int
    """Threads that appeared or ended within the window (an idle daemon has none)."""
    processes: dict[str, ProcessMem] = field(default_factory=dict)
    threads: list[ThreadCpu] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)
    """RSS (MiB) of bare processes measured in the same run: what no idle daemon on this
    interpreter and these libraries goes below (see `floors`)."""

    def explain(self) -> dict[str, Any]:
        """The attribution, for `rfidd bench --json` (`idle_explain`)."""
        return {
            "seconds": round(self.seconds, 2),
            "threads_cpu_ratio": self.threads_cpu_ratio,
            "ticks_cpu_ratio": self.ticks_cpu_ratio,
            "wakeups_per_s": round(self.wakeups_per_s, 2),
            "threads_started": self.threads_started, "threads_ended": self.threads_ended,
            "processes": {k: {"rss_mib": round(v.rss_mib, 1), "pss_mib": round(v.pss_mib, 1),
                              "anon_mib": round(v.anon_mib, 1)}
                          for k, v in self.processes.items()},
            "floors_rss_mib": {k: round(v, 1) for k, v in self.floors.items()},
            "threads": [{"process": t.process, "thread": t.thread, "count": t.count,
                         "cpu_ms_per_s": round(t.cpu_ms_per_s, 4),
                         "wakeups_per_s": round(t.wakeups_per_s, 2)} for t in self.threads],
        }


def process_label(pid: int, root: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    if b"readers.host" in cmd:
        return "reader-host"
    return "daemon" if pid == root else f"child-{pid}"


def _threads(pids: list[int]) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(pid, tid) -> (thread name, ns on the CPU, times scheduled)."""
    out: dict[tuple[int, int], tuple[str, int, int]] = {}
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                ns, _wait, slices = (int(x) for x in (task / "schedstat").read_text().split())
            except (OSError, ValueError):
                continue
            out[(p, int(task.name))] = (name, ns, slices)
    return out


def _ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def _memory(pid: int) -> ProcessMem:
    kib: dict[str, int] = {}
    for path in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
        try:
            for line in Path(path).read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "Pss", "Anonymous"):
                    kib[key] = int(rest.split()[0])
        except OSError:
            continue
    return ProcessMem(kib.get("VmRSS", 0) / 1024, kib.get("Pss", 0) / 1024,
                      kib.get("Anonymous", 0) / 1024)


def measure(pid: int, seconds: float) -> IdleFigures:
    """CPU per thread and memory per process of `pid`'s tree over `seconds`."""
    pids0 = tree(pid)
    th0, k0, t0 = _threads(pids0), _ticks(pids0), time.monotonic()
    time.sleep(seconds)
    pids1 = tree(pid)
    th1, k1, t1 = _threads(pids1), _ticks(pids1), time.monotonic()
    k0 -= _ticks([p for p in pids0 if p not in pids1])  # a child gone: neither end counts it
    window = t1 - t0
    labels = {p: process_label(p, pid) for p in pids1}
    groups: dict[tuple[str, str], list[float]] = {}
    for key, (name, ns, slices) in th1.items():
        _n0, ns0, sl0 = th0.get(key, (name, 0, 0))
        g = groups.setdefault((labels[key[0]], name), [0, 0.0, 0.0])
        g[0] += 1
        g[1] += (ns - ns0) / 1e6 / window
        g[2] += (slices - sl0) / window
    threads = sorted((ThreadCpu(p, n, int(c), ms, w) for (p, n), (c, ms, w) in groups.items()),
                     key=lambda t: -t.cpu_ms_per_s)
    by_threads = sum(t.cpu_ms_per_s for t in threads) / 1000
    tick = 1 / os.sysconf("SC_CLK_TCK")
    by_ticks = (k1 - k0) * tick / window
    started = sum(1 for k in th1 if k not in th0)
    ended = sum(1 for k in th0 if k not in th1)
    slack = 2 * len(pids1) * tick / window  # each process's ticks, rounded at both ends
    cpu = by_threads if ended == 0 and by_ticks - by_threads <= slack else max(by_threads,
                                                                                by_ticks)
    mem = {labels[p]: _memory(p) for p in pids1}
    return IdleFigures(window, sum(m.rss_mib for m in mem.values()), cpu, by_threads, by_ticks,
                       sum(t.wakeups_per_s for t in threads), started, ended, mem, threads)


STACK = ("pydantic", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "fastapi", "uvicorn",
         "apscheduler.schedulers.background", "paho.mqtt.client", "prometheus_client", "epcpy",
         "click", "sllurp.llrp", "serial")
"""The daemon's third-party libraries (imported, nothing built with them)."""
_FLOOR = ("import importlib, sys\n[importlib.import_module(m) for m in sys.argv[1:]]\n"
          "print([int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS')]"
          "[0] / 1024)")


def floors() -> dict[str, float]:
    """RSS of this interpreter alone, with the daemon's libraries imported, and with the
    reader host's (sllurp): the part of each process's RSS that rfidd's own code and data
    cannot remove."""
    def rss_of(*modules: str) -> float:
        out = subprocess.run([sys.executable, "-c", _FLOOR, *modules], capture_output=True,
                             text=True, check=True, timeout=120)
        return float(out.stdout.split()[-1])

    return {"interpreter": rss_of(), "daemon_libraries": rss_of(*STACK),
            "reader_host_libraries": rss_of("sllurp.llrp")}


def _established(pids: list[int], ports: set[int]) -> int:
    """TCP connections of `pids` established to one of `ports` on this machine."""
    inodes: set[str] = set()
    for p in pids:
        for fd in Path(f"/proc/{p}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) in ports:
                n += 1
    return n


def idle(mqtt_url: str, seconds: float, readers: int = 4,
         llrp_process: bool | None = None) -> IdleFigures:
    """Run the idle daemon (`rfidd run`'s code, its own process) against `readers` simulated
    readers that see no tag, and measure it once it is up and settled."""
    import simulator
    from rfidd.bench_ingest import _SimProcess, scenario_text
    from rfidd.demo import demo_config
    from simulator import Scenario

    catalog = Path(simulator.__file__).parent / "scenarios" / "maison-catalog.csv"
    text = scenario_text(readers, 0, 1.0, catalog)
    with tempfile.TemporaryDirectory(prefix="rfidd-bench-") as tmp:
        path = Path(tmp) / "idle.toml"
        path.write_text(text)
        scenario = Scenario.parse(text, str(path), Path(tmp))
        sim = _SimProcess(path)
        sim.expected = readers
        with sim, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(f"{tmp}/notify")
            notify.settimeout(1.0)
            cfg = demo_config(scenario, sim.ports, f"sqlite:///{tmp}/i.db", mqtt_url,
                              site_id=f"idle{uuid.uuid4().hex[:6]}",
                              http={"port": 0})  # the API and page on, as deployed
            if llrp_process is not None:
                cfg = cfg.model_copy(update={"llrp_process": llrp_process})
            env = os.environ | {"NOTIFY_SOCKET": f"{tmp}/notify"}
            proc = subprocess.Popen([sys.executable, "-c", _RUN], stdin=subprocess.PIPE,
                                    text=True, env=env)
            try:
                assert proc.stdin is not None
                proc.stdin.write(cfg.model_dump_json())
                proc.stdin.close()
                _wait_up(proc, notify, set(sim.ports.values()), readers)
                # As systemd does: read every notification (WATCHDOG=1...), or the daemon's
                # sendto blocks on a full socket.
                threading.Thread(target=_drain, args=(notify,), daemon=True).start()
                time.sleep(SETTLE_S)
                got = measure(proc.pid, seconds)
            finally:
                proc.terminate()
                proc.wait(60)
    got.floors = floors()  # after the daemon stopped: not in its window
    return got


def _wait_up(proc: subprocess.Popen[str], notify: socket.socket, ports: set[int],
             readers: int) -> None:
    """READY=1 from the daemon (sd_notify), then every reader's connection established."""
    deadline = time.monotonic() + START_TIMEOUT_S
    ready = False
    while not ready:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"idle daemon not ready (exit code {proc.returncode})")
        try:
            ready = b"READY=1" in notify.recv(4096)
        except TimeoutError:
            continue
    while _established(tree(proc.pid), ports) < readers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"idle daemon: its {readers} readers did not connect")
        time.sleep(0.2)


def _drain(notify: socket.socket) -> None:
    while True:
        try:
            notify.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
