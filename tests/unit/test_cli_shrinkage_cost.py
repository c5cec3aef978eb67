"""`rfidd ops shrinkage`'s headline: a loss whose product has no cost in the catalog is not
"at cost 0" (a manager reads that as free); the headline says how many items have no cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fakeapi import always, serve_json

from rfidd.ops import ops_cli


def _doc(cost_value: str, uncosted: int) -> dict[str, Any]:
    return {
        "period_start": 1796166000.0, "period_end": 1796221428.0, "currency": "EUR",
        "totals": {"items": 2, "confirmed": 2, "suspected": 0, "unpriced": 0,
                   "cleared_alerts": 0, "value": "1100.00", "confirmed_value": "1100.00",
                   "suspected_value": "0", "cost_value": cost_value,
                   "confirmed_cost_value": cost_value, "suspected_cost_value": "0",
                   "uncosted": uncosted, "sales_value": "630.00", "returns_value": "210.00",
                   "net_sales_value": "420.00", "shrinkage_rate": 2.619, "confirmed_rate": 2.619},
        "by_category": {}, "by_zone": {},
    }


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[str]:
    with serve_json(always(request.param)) as url:
        yield url


def _headline(api: str) -> str:
    r = CliRunner().invoke(ops_cli, ["--api", api, "shrinkage"], env={"RFIDD_TOKEN": "t"})
    assert r.exit_code == 0, r.output
    return " ".join(r.stdout.split())


@pytest.mark.parametrize("api", [_doc("0", 2)], indirect=True)
def test_no_cost_in_the_catalog_is_not_a_cost_of_zero(api: str) -> None:
    line = _headline(api)
    assert "at cost 0" not in line, line
    assert "2 item(s) without a cost in the catalog" in line, line


@pytest.mark.parametrize("api", [_doc("300.00", 1)], indirect=True)
def test_a_partly_costed_loss_says_what_the_cost_leaves_out(api: str) -> None:
    line = _headline(api)
    assert "at cost 300.00 + 1 item(s) without a cost in the catalog" in line, line


@pytest.mark.parametrize("api", [_doc("300.00", 0)], indirect=True)
def test_a_costed_loss_shows_its_cost(api: str) -> None:
    line = _headline(api)
    assert "at cost 300.00)" in line, line
    assert "without a cost" not in line, line
