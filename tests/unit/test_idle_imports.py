"""What an idle daemon keeps in memory: modules it never uses at idle are imported on first use.

Each module named here cost the idle daemon MiBs for good (issue 12: idle < 60 MiB). The checks
run in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rfidd.store.db import head_revision, packaged_head

LAZY = ("alembic", "mako", "pygments", "pygal", "babel", "argon2", "joserfc", "cryptography",
        "rich", "rfidd.ops.bench", "rfidd.ops.cli")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_daemons_modules_do_not_load_what_idle_never_uses() -> None:
    loaded = _loaded_after("import rfidd.app")
    assert sorted(m for m in LAZY if m in loaded) == []


def test_opening_a_database_already_at_head_does_not_load_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/site.db"
    from rfidd.store.db import open_database

    open_database(url).dispose()  # created and migrated here
    loaded = _loaded_after(f"from rfidd.store.db import open_database\n"
                           f"open_database({url!r}).dispose()")
    assert "alembic" not in loaded


def test_the_packaged_head_read_from_the_files_is_alembics() -> None:
    assert packaged_head() == head_revision() is not None
