"""`rfidd bench` on small sizes: every figure checks its planted discrepancies."""

from __future__ import annotations

import json

from click.testing import CliRunner

from rfidd.ops import bench_command
from rfidd.ops.bench import run


def test_bench_figures_include_database_and_match_planted_results() -> None:
    figures = {f.name: f for f in run((3000,), 300, None)}
    assert set(figures) == {"count_3000", "reception_300", "db_count_3000", "db_reception_300"}
    assert all(f.ok for f in figures.values())
    db = figures["db_count_3000"]
    assert db.details["insert_s"] > 0 and db.seconds["db_load"] > 0
    assert db.details["totals"]["expected"] == 3000
    assert figures["db_reception_300"].details["totals"]["missing"] == 7


def test_bench_command_prints_json_and_rejects_bad_sizes() -> None:
    res = CliRunner().invoke(bench_command, ["--sizes", "1000", "--asn-items", "100", "--json"])
    assert res.exit_code == 0, res.output
    assert {f["name"] for f in json.loads(res.output)} >= {"count_1000", "db_count_1000"}
    bad = CliRunner().invoke(bench_command, ["--sizes", "ten"])
    assert bad.exit_code == 2 and "--sizes" in bad.output
