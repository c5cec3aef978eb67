"""`rfidd bench --smoke`: the benchmark's code runs end to end on small sizes so it cannot rot.

No figure is compared with a time or a rate (the machine's speed is not the code's property):
what is checked is that every key has a measured value, events were PUBACKed, nothing was lost
and the reconcile results matched what was planted.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from rfidd.benchmark import SMOKE, TARGETS, bench_command, explain_tables, run, table

pytestmark = pytest.mark.integration


def test_bench_smoke_measures_every_key(mqtt_broker: Any, postgres_url: str) -> None:
    url = f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"
    res = run(SMOKE, url, postgres_url)
    missing = [k for k, (floor, _t) in TARGETS.items()
               for key in (k, floor) if key is not None and not isinstance(res.get(key), float)]
    assert missing == []
    assert res["reconcile_100k_ok"] and res["reconcile_1m_ok"]
    assert res["ingest_events"] > 0 and res["ingest_events_pubacked"] == res["ingest_events"]
    assert res["ingest_lost_reads"] == 0 and res["overload_lost_reads"] == 0
    assert res["ingest_max_lost_reads"] == 0
    assert res["ingest_reads_per_s"] > 0 and res["decode_only_reads_per_s"] > 0
    # The ceiling run: its floor decoded the same offered stream; shed is counted, not lost.
    assert res["ingest_max_decode_only_reads_per_s"] > 0 and res["ingest_max_reads_per_s"] > 0
    assert res["ingest_max_shed_reads_per_s"] >= 0
    assert res["ingest_max_saturated"] == (res["ingest_max_shed_reads_per_s"] > 0)
    # The ingest thread's own CPU, from its schedstat: measured in each run, not defaulted.
    for key in ("ingest_thread_us_per_read", "ingest_thread_ms_per_batch",
                "ingest_thread_us_per_read_in_run", "overload_ingest_thread_ms_per_batch",
                "ingest_max_ingest_thread_us_per_read"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["ingest_thread_reads_per_s"] > 0
    # What the simulators really sent and where the machine's CPU went, in both loaded runs.
    for run_ in ("overload", "ingest_max"):
        assert res[f"{run_}_offered_sent_reads_per_s"] > 0
        assert res[f"{run_}_received_reads_per_s"] > 0
        assert res[f"{run_}_offered_short"] == (
            res[f"{run_}_offered_sent_reads_per_s"] < 0.95 * res[f"{run_}_offered_reads_per_s"])
        for part in ("sim", "daemon", "ingest_thread", "intake_thread"):
            assert res[f"{run_}_cpu_cores_{part}"] > 0, (run_, part)
        assert 0 < res[f"{run_}_cpu_cores_machine"] <= res[f"{run_}_cpu_cores"] * 1.05
        assert res[f"{run_}_cpu_cores_others"] >= 0
    assert res["staff_ops_ok"]  # the take-over, count, reception and shipment did their job
    assert set(res["staff_ops"]) == {"takeover_2000", "count_close_2000",
                                     "reception_close_1000", "ship_500", "ok"}
    assert res["domain_lock_max_hold_ms"] > 0 and res["count_close_items_per_s"] > 0
    # The idle daemon is measured with its reader host (the child counts), per thread name.
    ex = res["idle_explain"]
    assert set(ex["processes"]) == {"daemon", "reader-host"}
    assert abs(res["idle_rss_mib"] - sum(p["rss_mib"] for p in ex["processes"].values())) < 0.5
    named = {(t["process"], t["thread"]) for t in ex["threads"]}
    assert {("daemon", "ingest"), ("daemon", "mqtt-publisher"), ("daemon", "http"),
            ("reader-host", "host-writer")} <= named
    assert {f"reader-r{i:02d}" for i in range(4)} <= {t for _p, t in named}
    assert set(ex["floors_rss_mib"]) == {"interpreter", "daemon_libraries",
                                         "reader_host_libraries"}
    console = Console(record=True, width=120)
    console.print(table(res))
    for t in explain_tables(res):
        console.print(t)
    text = console.export_text()
    assert "ingest_reads_per_s" in text and "ingest_max_reads_per_s" in text
    assert "mqtt-publisher" in text


def test_bench_command_rejects_a_bad_window() -> None:
    res = CliRunner().invoke(bench_command, ["--smoke", "--seconds", "0"])
    assert res.exit_code == 2 and "--seconds" in res.output
