"""The units' `MemoryDenyWriteExecute=yes`, proved without systemd as PID 1.

On Linux >= 6.3 systemd implements it with `prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)` (older
kernels: a seccomp filter on the same calls). The flag is inherited by children and kept across
execve, so a wrapper that sets it before exec (a preexec_fn here) puts `rfidd` exactly where the
unit puts it: no mapping may ever be writable and executable. The daemon must then still start,
ingest, verify a staff PIN (argon2 through cffi) and talk to PostgreSQL (psycopg's binary build),
and `rfidd hq` must store what a site sends it.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tomlout import to_toml
from waits import wait_until

from rfidd.demo import demo_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
PIN = "4711"


def _set_mdwe() -> None:
    """preexec_fn: what systemd does for MemoryDenyWriteExecute=yes on Linux >= 6.3."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_MDWE): {os.strerror(err)}")


def _mdwe_missing() -> str | None:
    """Why this kernel cannot run the test (None: it can), asked of a throw-away child."""
    probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
             "r = libc.prctl(65, 1, 0, 0, 0); print(r, ctypes.get_errno())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=30).stdout.split()
    if out and out[0] == "0":
        return None
    return (f"kernel {os.uname().release} has no PR_SET_MDWE (Linux >= 6.3; errno "
            f"{out[1] if len(out) > 1 else '?'}): systemd falls back to seccomp there")


@pytest.fixture(scope="module")
def mdwe() -> None:
    reason = _mdwe_missing()
    if reason is not None:
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Notify:
    """A systemd notification socket (abstract address): READY=1 as systemd would see it."""

    def __init__(self) -> None:
        self.address = f"@rfidd-mdwe-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self.got: list[str] = []

    def ready(self) -> bool:
        try:
            while True:
                self.got.extend(self.sock.recv(65536).decode().splitlines())
        except BlockingIOError:
            pass
        return "READY=1" in self.got


def _start(args: list[str], log: Path, notify: Notify) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "RFIDD_LOG_FORMAT": "kv"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "rfidd.cli", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_set_mdwe)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.terminate()
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, log.read_text()[-3000:]


def _journaled(url: str) -> int:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM events")).scalar_one())
    except DBAPIError:  # not migrated yet
        return 0
    finally:
        engine.dispose()


def test_the_wrapper_really_refuses_write_execute_memory(mdwe: None) -> None:
    """The control: under the wrapper a W+X mapping is refused, and the flag survives exec."""
    code = ("import ctypes, mmap\n"
            "print('mdwe', ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))\n"
            "try:\n"
            "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "    print('wx mapped')\n"
            "except PermissionError:\n"
            "    print('wx refused')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         preexec_fn=_set_mdwe, timeout=30).stdout.split("\n")
    assert out[:2] == [f"mdwe {PR_MDWE_REFUSE_EXEC_GAIN}", "wx refused"], out
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30).stdout.split("\n")
    assert free[:2] == ["mdwe 0", "wx mapped"], free  # without it: allowed (the test can fail)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Any]:
    from simulator import Scenario, SimulatedSite

    scenario = Scenario.load(ROOT / "simulator" / "scenarios" / "demo-store.toml")
    sim = SimulatedSite(scenario, run_timeline=False)
    sim.start()
    try:
        yield scenario, sim
    finally:
        sim.stop()


def _site_config(tmp_path: Path, site: Any, db_url: str, mqtt_url: str | None,
                 site_id: str) -> tuple[Path, int]:
    scenario, sim = site
    users = tmp_path / "users.json"
    subprocess.run([sys.executable, "-m", "rfidd.cli", "users", "add", "alice", "--file",
                    str(users), "--role", "manager", "--pin", PIN], check=True,
                   capture_output=True, preexec_fn=_set_mdwe, timeout=60)  # argon2 hashing
    port = _free_port()
    cfg = demo_config(scenario, sim.ports, db_url, mqtt_url, site_id=site_id,
                      http={"enabled": True, "port": port, "auth": {"users_file": str(users)}})
    path = tmp_path / "rfidd.toml"
    path.write_text(to_toml(cfg.model_dump(mode="json", exclude_none=True)) + "\n")
    return path, port


def _deliver(site: Any) -> None:
    """A delivery arrives at the reception reader: business events to journal."""
    from simulator.scenario import Action

    site[1].apply(Action(t=0, action="shipment", zone="reception", count=5))


def _sign_in(port: int) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/session", method="POST",
        data=json.dumps({"login": "alice", "secret": PIN}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(r.status)


def test_site_daemon_runs_under_memory_deny_write_execute(mdwe: None, tmp_path: Path,
                                                          site: Any, db_url: str) -> None:
    """`rfidd run` under MDWE on SQLite and on PostgreSQL: ready, ingesting, PIN verified."""
    config, port = _site_config(tmp_path, site, db_url, None, f"mdwe-{uuid.uuid4().hex[:6]}")
    notify, log = Notify(), tmp_path / "rfidd.log"
    proc = _start(["run", "-c", str(config)], log, notify)
    try:
        wait_until(lambda: notify.ready() or proc.poll() is not None, "READY=1", timeout=90)
        assert proc.poll() is None, log.read_text()[-3000:]
        _deliver(site)
        wait_until(lambda: _journaled(db_url) > 0, "events journaled", timeout=60)
        assert _sign_in(port) == 200  # argon2 verify in the daemon
        _stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.sock.close()


def test_hq_runs_under_memory_deny_write_execute(mdwe: None, tmp_path: Path, site: Any,
                                                 postgres_url: str,
                                                 private_mosquitto: Any) -> None:
    """`rfidd hq run` (PostgreSQL) and a site, both under MDWE: the site's events reach HQ."""
    from sqlalchemy import create_engine, text

    broker = f"mqtt://{private_mosquitto.host}:{private_mosquitto.port}"
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    site_db = f"sqlite:///{site_dir / 'site.db'}"
    config, _port = _site_config(site_dir, site, site_db, broker, f"mdwe-{uuid.uuid4().hex[:6]}")
    hq_cfg = tmp_path / "hq.toml"
    hq_cfg.write_text(f"""
[database]
url = "{postgres_url}"
batch_max_ms = 100
[mqtt]
url = "{broker}"
share_group = ""
relay_asns = false
client_id = "hq-mdwe-{uuid.uuid4().hex[:6]}"
[sites]
accept_unknown = true
[epcis]
port = 0
""")
    hq_notify, hq_log = Notify(), tmp_path / "hq.log"
    site_notify, site_log = Notify(), site_dir / "rfidd.log"
    hq = _start(["hq", "run", "-c", str(hq_cfg)], hq_log, hq_notify)
    daemon: subprocess.Popen[bytes] | None = None
    engine = create_engine(postgres_url)

    def stored() -> int:
        try:
            with engine.connect() as c:
                return int(c.execute(text("SELECT count(*) FROM hq_events")).scalar_one())
        except Exception:
            return 0

    try:
        wait_until(lambda: hq_notify.ready() or hq.poll() is not None, "HQ READY=1",
                   timeout=90)
        assert hq.poll() is None, hq_log.read_text()[-3000:]
        wait_until(lambda: 'msg="connected to' in hq_log.read_text(), "HQ on the broker",
                   timeout=60)
        daemon = _start(["run", "-c", str(config)], site_log, site_notify)
        wait_until(lambda: site_notify.ready() or daemon.poll() is not None, "READY=1",
                   timeout=90)
        assert daemon.poll() is None, site_log.read_text()[-3000:]
        _deliver(site)
        wait_until(lambda: stored() > 0, "the site's events stored at HQ", timeout=90)
        _stop(daemon, site_log)
        _stop(hq, hq_log)
    finally:
        for p in (daemon, hq):
            if p is not None and p.poll() is None:
                p.kill()
        engine.dispose()
        hq_notify.sock.close()
        site_notify.sock.close()
