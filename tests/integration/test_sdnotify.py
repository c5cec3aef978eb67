"""systemd Type=notify: READY=1 once readers and DB are up, WATCHDOG=1 from the supervisor loop,
STOPPING=1 on SIGTERM — checked on a real notification socket against `rfidd run`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_rfidd_run_speaks_sd_notify(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    cfg = tmp_path / "rfidd.toml"
    cfg.write_text(f"""
[site]
id = "notify-test"
name = "notify"
sgln = "urn:epc:id:sgln:3760001.00001.0"
[database]
url = "sqlite:///{tmp_path / 'rfidd.db'}"
[mqtt]
enabled = false
[http]
port = 0
[zones.floor]
kind = "floor"
""")
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "600000", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "rfidd.cli", "run", "-c", str(cfg)],
                            env=env, stderr=subprocess.PIPE, text=True)
    got: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 2:
            got.extend(sock.recv(4096).decode().splitlines())
        assert "READY=1" in got
        assert got.index("READY=1") < got.index("WATCHDOG=1")
        assert got.count("WATCHDOG=1") >= 2  # fed at least every WATCHDOG_USEC / 3
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got:
            got.extend(sock.recv(4096).decode().splitlines())
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
