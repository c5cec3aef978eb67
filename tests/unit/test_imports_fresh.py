"""Every module of rfidd, inventory, readers and simulator imports on its own, first, in an
interpreter that has imported none of them (a circular import only shows when its module is
the first one loaded: `import rfidd.ops.api` failed that way while the daemon, importing
rfidd.app first, never did).

One fresh `python` lists the modules from the files (never importing them), preloads the
third-party libraries (their import cycles are not ours, and loading them once keeps this
quick), then forks one child per module: each child starts with no module of ours loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rfidd", "inventory", "readers", "simulator")

PROBE = r"""
import importlib, json, multiprocessing as mp, os, sys, traceback
from pathlib import Path

root, packages = Path(sys.argv[1]), sys.argv[2:]
for lib in ("fastapi", "starlette", "pydantic", "sqlalchemy", "alembic", "click", "rich",
            "pygal", "babel", "uvicorn", "paho.mqtt.client", "apscheduler", "serial", "sllurp",
            "argon2", "joserfc", "cryptography", "prometheus_client", "psycopg"):
    try:
        importlib.import_module(lib)
    except Exception:
        pass
ours = [m for m in sys.modules if m.split(".")[0] in packages]
assert not ours, f"already loaded: {ours}"
modules = []
for pkg in packages:
    for f in sorted((root / pkg).rglob("*.py")):
        rel = f.relative_to(root).with_suffix("")
        if "migrations" in rel.parts:
            continue  # Alembic scripts: run by Alembic, not imported
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules.append(".".join(parts))


def one(name, conn):
    try:
        importlib.import_module(name)
        conn.send(None)
    except BaseException:
        conn.send(traceback.format_exc(limit=-3))


ctx = mp.get_context("fork")
failed = {}
for name in modules:
    here, there = ctx.Pipe(duplex=False)
    p = ctx.Process(target=one, args=(name, there))
    p.start()
    there.close()
    err = here.recv() if here.poll(120) else "no answer in 120 s"
    p.join(30)
    if err is not None or p.exitcode != 0:
        failed[name] = err or f"exit code {p.exitcode}"
print(json.dumps({"modules": modules, "failed": failed}))
"""


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), *PACKAGES],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.splitlines()[-1])
    assert "rfidd.ops.api" in doc["modules"] and len(doc["modules"]) > 100, doc["modules"]
    assert doc["failed"] == {}, "\n".join(f"{m}:\n{e}" for m, e in doc["failed"].items())
