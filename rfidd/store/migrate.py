"""The schema upgrade in a child process: `python -m rfidd.store.migrate`, the URL on stdin (never
on the command line, where `ps` shows a password).

Alembic brings Mako and Pygments with it: ~11 MiB that a daemon which migrated in its own
process keeps for its whole life (months, on a store PC), for one upgrade at start. `rfidd run`
migrates here instead; the child prints the revisions before and after as one JSON line, or
the reason it failed on stderr (exit 1).
"""

from __future__ import annotations

import json
import subprocess
import sys


def run_upgrade(url: str) -> tuple[str | None, str | None]:
    """Upgrade the database at `url` to the packaged head in a child; (before, after).
    RuntimeError with the child's reason when it fails."""
    proc = subprocess.run([sys.executable, "-m", "rfidd.store.migrate"], input=url,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"migration process exited {proc.returncode}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return got["before"], got["after"]


def main() -> None:
    from rfidd.store.db import Database, create_db_engine, upgrade

    url = sys.stdin.read().strip()
    try:
        db = Database(create_db_engine(url))
        try:
            before = db.current_revision()
            upgrade(db)
            after = db.current_revision()
        finally:
            db.dispose()
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main()
