"""The read-only HQ commands on a database that is not HQ's, or not at this rfidd's schema: one
line naming the database and what to run, exit 78 (set-up to do) or 75 (cannot be reached now),
never a query's traceback; `rfidd hq migrate` is the command they name, and it works."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from rfidd.config import EX_CONFIG, EX_TEMPFAIL
from rfidd.hq import hq_command
from rfidd.hq.schema_check import head_revision
from rfidd.hq.store import HqStore

READERS = [["sites"], ["stock"], ["reports"], ["alerts"],
           ["where", "urn:epc:id:sgtin:0614141.112345.1"]]


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(hq_command, list(args))
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("cmd", READERS, ids=lambda c: c[0])
def test_no_hq_schema_is_one_line_and_exit_78(tmp_path: Path, cmd: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    code, out, err = _run(*cmd, "--database-url", url)
    assert code == EX_CONFIG, (out, err)
    assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{url}: no HQ schema in this database" in err and "rfidd hq migrate" in err


def test_an_older_schema_says_upgrade_it_then_migrate_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    old = HqStore.open(url, migrate=False)
    old.upgrade("hq0003")
    old.dispose()
    code, _, err = _run("sites", "--database-url", url)
    assert code == EX_CONFIG and "HQ schema hq0003 " in err and "is older" in err, err
    code, out, _ = _run("migrate", "--database-url", url)
    assert code == 0 and out.strip() == f"HQ schema at {head_revision()} (was hq0003)", out
    code, out, err = _run("sites", "--database-url", url, "--json")
    assert code == 0 and out.strip() == '{"sites": []}', (out, err)
    assert _run("migrate", "--database-url", url)[1].strip().endswith("(already)")


def test_a_database_not_reachable_now_is_temporary_exit_75() -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = _run("sites", "--database-url",
                          f"postgresql+psycopg://rfidd@127.0.0.1:{port}/test")
    assert code == EX_TEMPFAIL and out == "" and len(err.strip().splitlines()) == 1, err
    assert "cannot read the database now" in err and "Traceback" not in err
