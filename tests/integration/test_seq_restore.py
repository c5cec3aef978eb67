"""The site's sequence after `rfidd restore`: no number HQ holds is used again, HQ does not wait
for the numbers the restored site skipped, and the events lost for good are reported.

A real site daemon (in-process: real outbox, head, restore step), a private Mosquitto, the real
HQ consumer on PostgreSQL, and the real `rfidd backup` / `rfidd restore` commands.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from test_hq_gaps import hq_config, journal, outbox_empty, site_daemon
from waits import wait_until

from rfidd.cli import main
from rfidd.hq.config import parse_hq_config
from rfidd.hq.consumer import HqConsumer
from rfidd.hq.gaps import site_sequences
from rfidd.hq.registry import register_site
from rfidd.hq.store import HqStore, hq_events, hq_site_messages
from rfidd.store import sequence

pytestmark = pytest.mark.integration


def site_config(tmp: Path, site: str) -> Path:
    """The site's config file for the CLI (the daemon's database; no HTTP API to probe)."""
    p = tmp / "rfidd.toml"
    p.write_text(f'[site]\nid = "{site}"\nname = "{site}"\n'
                 f'sgln = "urn:epc:id:sgln:0614141.00003.0"\n'
                 f'[database]\nurl = "sqlite:///{tmp / f"{site}.db"}"\n'
                 '[mqtt]\nenabled = false\n[http]\nenabled = false\n'
                 '[zones.stock]\nkind = "stock"\n')
    return p


def hq_rows(store: HqStore, site: str) -> list[tuple[str, int]]:
    with store.engine.connect() as c:
        return [(r[0], int(r[1])) for r in c.execute(
            select(hq_events.c.event_id, hq_events.c.seq).where(hq_events.c.site == site))]


def hq_alerts(store: HqStore, site: str, kind: str) -> list[dict[str, Any]]:
    m = hq_site_messages
    with store.engine.connect() as c:
        return [p for (p,) in c.execute(select(m.c.payload).where(
            m.c.site == site, m.c.kind == "alert")) if p.get("type") == kind]


def drop_session(broker: Any, client_id: str) -> None:
    """HQ's queued messages vanish (the broker lost them): a clean session under its id."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port, clean_start=True)
    c.loop_start()
    wait_until(c.is_connected, "a clean session for HQ's client id", 10)
    c.disconnect()
    c.loop_stop()


def test_a_restored_site_continues_above_hq_and_the_lost_range_is_reported(
        private_mosquitto: Any, postgres_url: str, tmp_path: Path) -> None:
    broker = private_mosquitto.broker
    tag = uuid.uuid4().hex[:8]
    prefix = f"rst-{tag}/rfidd/v1"
    site = f"st{tag}"
    cfg = parse_hq_config(hq_config(prefix, broker, postgres_url, tag))
    store = HqStore.open(postgres_url, known_sites_only=True)
    register_site(store.engine, site, "Store", datetime.now(UTC))
    cli_cfg = site_config(tmp_path, site)
    hq = HqConsumer(cfg.mqtt, store, batch_max_s=0.02, reconnect_max_s=1)
    hq.start()
    d = site_daemon(site, 3, prefix, broker, tmp_path, seq_head_s=0.2)
    try:
        assert hq.wait_subscribed(10)
        assert d.hq is not None and d.hq.wait_connected(10)
        journal(d, site, 100)  # seq 1..100
        wait_until(lambda: len(hq_rows(store, site)) == 100, "100 events at HQ", 30)
        res = CliRunner().invoke(main, ["backup", str(tmp_path / "b.db"), "-c", str(cli_cfg)])
        assert res.exit_code == 0, res.output
        journal(d, site, 30, start=100)  # seq 101..130: HQ gets them
        wait_until(lambda: len(hq_rows(store, site)) == 130, "130 events at HQ", 30)
        hq.stop()
        journal(d, site, 20, start=130)  # seq 131..150: acknowledged, queued for HQ...
        wait_until(lambda: outbox_empty(d), "131..150 acknowledged by the broker", 30)
    finally:
        d.stop()  # the final head: published_through 150
    drop_session(broker, f"hq-{tag}")  # ...and lost: no site will have them after the restore

    res = CliRunner().invoke(main, ["restore", str(tmp_path / "b.db"), "-c", str(cli_cfg)])
    assert res.exit_code == 0, res.output
    hq = HqConsumer(cfg.mqtt, store, batch_max_s=0.02, reconnect_max_s=1)
    hq.start()
    d = site_daemon(site, 3, prefix, broker, tmp_path, seq_head_s=0.2)
    try:
        assert hq.wait_subscribed(10)
        journal(d, site, 20, start=1000)  # new events after the restore
        wait_until(lambda: len(hq_rows(store, site)) == 150, "the new events at HQ", 30)
        rows = hq_rows(store, site)
        seqs = [q for _e, q in rows]
        assert len({e for e, _q in rows}) == 150  # every event that still exists, once
        assert len(set(seqs)) == 150, "a sequence number was used twice"
        assert d.db is not None
        with d.db.session() as s:
            assert sequence.restored_at(s) is None
            skipped = sequence.skips(s)
        # The head of a clean stop is exact: the skip is what the backup lacks.
        assert [(a, b, u) for a, b, _r, u in skipped] == [(101, 150, 150)]
        assert "retained head 150 (clean stop)" in skipped[0][2]
        new = sorted(q for e, q in rows if q > 150)
        assert new == list(range(151, 171))
        # The unrecoverable range is reported, once; HQ waits for nothing in the skip.
        wait_until(lambda: hq_alerts(store, site, "sequence_lost"), "the loss reported", 20)
        lost = hq_alerts(store, site, "sequence_lost")
        assert len(lost) == 1 and lost[0]["ranges"] == [[131, 150]] and lost[0]["missing"] == 20
        wait_until(lambda: hq.metrics.registry.get_sample_value(
            "rfidd_hq_sequence_lost_total") == 20, "the loss counted in the metric", 20)
        wait_until(lambda: site_sequences(store.engine, [site])[0].contiguous == 170,
                   "HQ's contiguous mark over the skip", 20)
        assert site_sequences(store.engine, [site])[0].gaps == ()
    finally:
        d.stop()
        hq.stop()
        store.dispose()


def test_without_a_broker_the_restored_start_does_not_block_and_jumps_far(
        tmp_path: Path) -> None:
    from rfidd.config import MqttConfig
    from rfidd.seq_restore import continue_sequence, read_retained_head
    from rfidd.store import open_database

    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with db.write() as s:
            sequence.take_seq(s, 7)
            sequence.mark_restored(s, 1_790_000_000.0)
        with socket_closed() as port:
            down = MqttConfig.model_validate({"url": f"mqtt://127.0.0.1:{port}"})
            head = read_retained_head(down, "st", wait_s=0.5)
            assert head.highest is None and "not reachable within" in head.source
            assert continue_sequence(db, down, "st", wait_s=0.5) == (
                8, 7 + sequence.RESTORE_JUMP_UNKNOWN)
        with db.session() as s:
            assert sequence.restored_at(s) is None
            assert sequence.last_seq(s) == 7 + sequence.RESTORE_JUMP_UNKNOWN
            [(_a, _b, reason, used)] = sequence.skips(s)
        assert used is None and reason.startswith("restored 2026-09-") and "head unknown" in reason
        # Not restored: nothing to do, no broker asked.
        assert continue_sequence(db, down, "st", wait_s=0.5) is None
    finally:
        db.dispose()


class socket_closed:
    """A local port nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *_exc: object) -> None:
        return None


def test_hq_skips_parse_subtract_and_name_bad_input() -> None:
    from rfidd.hq.skips import parse_skips, without_skips

    at = datetime.now(UTC)
    rows = parse_skips("st", [[101, 200, "restored", 150]], at)
    assert rows[0].payload == {"type": "sequence_skip", "site": "st", "first": 101,
                               "last": 200, "reason": "restored", "used_through": 150}
    with pytest.raises(ValueError, match=r"skipped\[1\]"):
        parse_skips("st", [[1, 2, "x", None], [5, 3, "x", None]], at)
    assert without_skips([(90, 210), (300, 310)], [(101, 200)]) == [(90, 100), (201, 210),
                                                                   (300, 310)]


def test_a_head_not_from_a_clean_stop_gets_a_margin_and_an_exact_one_none(
        tmp_path: Path) -> None:
    """A daemon killed between two announcements numbered more than its head says."""
    from rfidd.store import open_database

    db = open_database(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with db.write() as s:
            sequence.take_seq(s, 10)
            assert sequence.continue_after_restore(s, 40, "r", 1.0) == (
                11, 40 + sequence.RESTORE_MARGIN)
            assert sequence.continue_after_restore(
                s, 40, "r", 1.0, exact=True) is None  # already above: nothing to skip
            assert sequence.last_seq(s) == 40 + sequence.RESTORE_MARGIN
    finally:
        db.dispose()


def test_a_pg_restore_by_hand_is_marked_restored_by_rfidd_restore_mark_restored(
        tmp_path: Path, postgres_url: str) -> None:
    """PostgreSQL sites restore with pg_restore, which knows nothing of the sequence: without
    the mark the next start would number events again from the backup's last number, numbers
    HQ already holds. `rfidd restore --mark-restored` sets it; the start then jumps."""
    import shutil
    import subprocess

    from sqlalchemy.engine import make_url

    from rfidd.config import MqttConfig
    from rfidd.seq_restore import continue_sequence
    from rfidd.store import open_database

    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed")
    u = make_url(postgres_url)
    schema = str(u.query["options"]).removeprefix("-csearch_path=")
    libpq = u.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    dump = tmp_path / "site.dump"
    db = open_database(postgres_url)
    try:
        with db.write() as s:
            sequence.take_seq(s, 7)  # numbered before the backup
        subprocess.run(["pg_dump", "-Fc", "-n", schema, "-f", str(dump), libpq], check=True)
        with db.write() as s:
            sequence.take_seq(s, 20)  # numbered after it: HQ holds 8..27
    finally:
        db.dispose()
    subprocess.run(["pg_restore", "--clean", "--if-exists", "-n", schema, "-d", libpq,
                    str(dump)], check=True)
    db = open_database(postgres_url)
    try:
        with db.session() as s:
            assert sequence.last_seq(s) == 7 and sequence.restored_at(s) is None  # the gap
    finally:
        db.dispose()
    cfg = tmp_path / "rfidd.toml"
    cfg.write_text(site_config(tmp_path, "pg-st").read_text().replace(
        f'sqlite:///{tmp_path / "pg-st.db"}', postgres_url))
    runner = CliRunner()
    res = runner.invoke(main, ["restore", "--mark-restored", "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "marked" in res.output and "restored" in res.output and "After a restore" in res.output
    db = open_database(postgres_url)
    try:
        with db.session() as s:
            assert sequence.restored_at(s) is not None
        off = MqttConfig.model_validate({"enabled": False})
        assert continue_sequence(db, off, "pg-st", wait_s=0.5) == (
            8, 7 + sequence.RESTORE_JUMP_UNKNOWN)  # above 27: no number of HQ's reused
    finally:
        db.dispose()
    for args in (["restore", "-c", str(cfg)],
                 ["restore", str(dump), "--mark-restored", "-c", str(cfg)]):
        res = runner.invoke(main, args)
        assert res.exit_code == 64 and "--mark-restored" in res.output, res.output
    res = runner.invoke(main, ["restore", str(dump), "-c", str(cfg)])  # a pg dump file: guidance
    assert res.exit_code == 64 and "rfidd restore --mark-restored" in res.output
