"""The schema upgrade in a child process, so that Alembic never loads in the daemon.

Alembic brings Mako and Pygments with it: ~11 MiB that a daemon which migrated in its own
process keeps for its whole life (months, on a store PC), for one upgrade at start. `rfidd run`
migrates in a child instead: forked while the daemon is still single-threaded (it starts with
everything already imported, so it costs no more time than migrating here), else spawned as
`python -m rfidd.store.migrate` with the URL on stdin (never on the command line, where `ps`
shows a password). The child reports the revisions before and after, or why it failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any


def _upgrade(url: str) -> dict[str, Any]:
    from rfidd.store.db import Database, create_db_engine, upgrade

    db = Database(create_db_engine(url))
    try:
        before = db.current_revision()
        upgrade(db)
        return {"before": before, "after": db.current_revision()}
    finally:
        db.dispose()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_upgrade(url: str, fork: bool | None = None) -> tuple[str | None, str | None]:
    """Upgrade the database at `url` to the packaged head in a child; (before, after).
    `fork`: None forks when this process has one thread (a fork with other threads running
    may inherit a lock one of them held). RuntimeError with the child's reason on failure.
    The caller holds no open connection to the database (its pool disposed)."""
    if fork is None:
        fork = hasattr(os, "fork") and threading.active_count() == 1
    got = _forked(url) if fork else _spawned(url)
    if "error" in got:
        raise RuntimeError(got["error"])
    return got["before"], got["after"]


def _forked(url: str) -> dict[str, Any]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: upgrade, report, leave without running any of the parent's exits
        os.close(r)
        try:
            out = _upgrade(url)
        except BaseException as exc:
            out = {"error": _reason(exc)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    _pid, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        return {"error": f"migration process ended without an answer (status {status})"}
    result: dict[str, Any] = json.loads(data)
    return result


def _spawned(url: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "rfidd.store.migrate"], input=url,
                          capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"error": err[-1] if err else f"migration process exited {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    url = sys.stdin.read().strip()
    try:
        out = _upgrade(url)
    except Exception as exc:
        print(_reason(exc), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
