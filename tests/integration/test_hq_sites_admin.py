"""The sites list at HQ: registered sites first, `--registered` / `?registered=true` for only
those, and forgetting a site (the CLI, or DELETE /api/v1/sites/{site} with an admin token)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from rfidd.hq import hq_command, tokens
from rfidd.hq.documents import EventRow
from rfidd.hq.epcis_api import EpcisServer, build_app
from rfidd.hq.registry import register_site
from rfidd.hq.store import Batch, HqStore, StatusRow, hq_events

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, 8, 0, 5, 123456, tzinfo=UTC)
X = "urn:epc:id:sgtin:0614141.107346.1"


@pytest.fixture
def store(db_url: str) -> Iterator[HqStore]:
    s = HqStore.open(db_url)
    register_site(s.engine, "st-02", "Lyon", T0)
    # heard of only: a retained status each (what stale test sites leave on a shared broker)
    s.write_batch(Batch(statuses=[StatusRow(x, "offline", T0, True)
                                  for x in ("aa-test", "st-02", "zz-test")]))
    s.write_batch(Batch(events=[EventRow("urn:uuid:e1", "aa-test", "ObjectEvent", T0, "OBSERVE",
                                         None, None, None, None, None, {"n": 1}, (X,))]))
    yield s
    s.dispose()


def cli(store: HqStore, *args: str) -> Any:
    url = store.engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(hq_command, [*args, "--database-url", url])


def test_registered_first_the_filter_and_forget_from_the_cli(store: HqStore) -> None:
    r = cli(store, "sites", "--json")
    assert [s["site"] for s in json.loads(r.output)["sites"]] == ["st-02", "aa-test", "zz-test"]
    r = cli(store, "sites", "--registered", "--json")
    assert [s["site"] for s in json.loads(r.output)["sites"]] == ["st-02"]
    r = cli(store, "sites")
    assert r.exit_code == 0 and "3 sites (2 heard of, not registered)" in r.output

    r = cli(store, "site", "forget", "aa-test")
    assert r.exit_code == 0 and "aa-test: forgotten" in r.output
    r = cli(store, "site", "forget", "aa-test")
    assert r.exit_code == 1 and "never heard of it" in r.output
    r = cli(store, "site", "forget", "st-02")
    assert r.exit_code == 1 and "is registered" in r.output
    r = cli(store, "sites", "--json")
    assert [s["site"] for s in json.loads(r.output)["sites"]] == ["st-02", "zz-test"]
    with store.engine.connect() as c:  # its events are history: they stay
        assert c.execute(select(func.count()).select_from(hq_events)).scalar() == 1
    r = cli(store, "site", "forget", "st-02", "--registered-too")
    assert r.exit_code == 0 and "(was registered)" in r.output
    assert [s["site"] for s in json.loads(cli(store, "sites", "--json").output)["sites"]] \
        == ["zz-test"]


def test_forget_over_http_needs_an_admin_token(store: HqStore) -> None:
    api = EpcisServer(build_app(store, CollectorRegistry()))
    api.start()
    read = tokens.create(store.engine, "ops", "read", T0)
    admin = tokens.create(store.engine, "root", "admin", T0)

    def call(method: str, path: str, token: str) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{api.port}{path}", method=method)
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        code, body = call("GET", "/api/v1/sites?registered=true", read)
        assert code == 200 and [s["site"] for s in body["sites"]] == ["st-02"]
        assert call("GET", "/api/v1/sites?registered=maybe", read)[0] == 400
        assert call("DELETE", "/api/v1/sites/zz-test", read)[0] == 403
        code, body = call("DELETE", "/api/v1/sites/zz-test", admin)
        assert code == 200 and body == {"site": "zz-test", "was_registered": False}
        assert call("DELETE", "/api/v1/sites/zz-test", admin)[0] == 404
        code, body = call("DELETE", "/api/v1/sites/st-02", admin)
        assert code == 409 and "registered" in body["error"]
        code, body = call("DELETE", "/api/v1/sites/st-02?registered_too=true", admin)
        assert code == 200 and body["was_registered"] is True
        code, body = call("GET", "/api/v1/sites", read)
        assert [s["site"] for s in body["sites"]] == ["aa-test"]
    finally:
        api.stop()


def test_where_and_history_print_seconds_in_stated_utc(store: HqStore) -> None:
    """Seconds, in UTC said so (sites span time zones); the JSON keeps full ISO 8601."""
    r = cli(store, "where", X)
    assert r.exit_code == 0 and "2026-12-01 08:00:05 UTC" in r.output, r.output
    assert "123456" not in r.output and "+00:00" not in r.output
    r = cli(store, "history", X)
    assert r.exit_code == 0 and "2026-12-01 08:00:05 UTC" in r.output, r.output
    r = cli(store, "where", X, "--json")
    assert json.loads(r.output)["event_time"] == T0.isoformat()
