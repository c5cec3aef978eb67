"""`rfidd demo > file`, as a new user pipes it: a real subprocess whose stdout is not a terminal.
Nothing is wrapped or cut at 80 columns: every EPC and product name stays whole on its line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import Scenario

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).resolve().parents[2] / "simulator" / "scenarios" / "demo-store.toml"
RFIDD = Path(sys.executable).with_name("rfidd")


def test_demo_piped_to_a_file_keeps_every_id_and_name_whole(tmp_path: Path) -> None:
    out = tmp_path / "demo.txt"
    env = {**os.environ, "COLUMNS": "80"}  # what a terminal-less shell would hand down
    with out.open("w") as f:
        proc = subprocess.run([str(RFIDD), "demo", "--seconds", "4", "--http-port", "0"],
                              stdout=f, stderr=subprocess.PIPE, env=env, timeout=300,
                              check=False)
    text = out.read_text(encoding="utf-8")
    assert proc.returncode == 0, text + proc.stderr.decode()
    # a clean run logs no error (the readers' clean stop used to log three)
    assert "level=error" not in text + proc.stderr.decode(), text
    lines = text.splitlines()
    # the first line names the database: one line, however long
    assert re.search(r"310 tagged items, database \S+rfidd\.db", lines[0]), lines[0]
    # the reception's discrepancies: each EPC whole (24 hex digits) on its own line
    listed = [ln for ln in lines if ln.lstrip().startswith(("missing:", "unexpected:"))]
    assert len(listed) == 4, text
    for ln in listed:
        assert re.match(r"\s+(missing|unexpected): [0-9A-F]{24} \(GTIN \d{14}\)$", ln), ln
    # the reception table: every shipped product on one row, not folded over two, named
    # as the page names it (name · size · colour), so no two rows read the same
    catalog = {str(r["gtin"]): r for r in Scenario.load(SCENARIO).catalog_rows()}
    rows = [ln for ln in lines if re.match(r"│ \d{14} ", ln)]
    assert rows, text
    shown = []
    for row in rows:
        gtin, product = (c.strip() for c in row.split("│")[1:3])
        want = " · ".join(str(x) for x in (catalog[gtin]["name"], catalog[gtin].get("size"),
                                           catalog[gtin].get("colour")) if x)
        assert product == want, (product, row)
        shown.append(product)
    assert len(set(shown)) == len(shown), shown
    assert any(len(ln) > 80 for ln in lines)  # wider than a terminal: it was not cut
