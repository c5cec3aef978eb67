"""The one ISO 8601 parser (inventory.isotime) and its one error format, at each edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import click
import pytest
from click.testing import CliRunner

from inventory.asn import parse_asn_object
from inventory.epcis import parse_datetime
from inventory.isotime import IsoTimeError, parse_iso_datetime
from rfidd.app import build_ops  # noqa: F401  (imported first: rfidd.ops alone hits an import cycle)
from rfidd.ops.api import parse_time
from rfidd.web.errors import ApiError


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T08:00:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
    ("2024-05-01T08:00:00z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
    (" 2024-05-01T10:00:00.250+02:00 ", datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=UTC)),
    ("2024-05-01T08:00:00-05:30",
     datetime(2024, 5, 1, 8, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
])
def test_aware_times_are_read(text: str, expected: datetime) -> None:
    assert parse_iso_datetime(text, "at") == expected


@pytest.mark.parametrize(("value", "problem"), [
    ("yesterday", "'yesterday' is not an ISO 8601 date-time"),
    ("2024-13-01T00:00:00Z", "'2024-13-01T00:00:00Z' is not an ISO 8601 date-time"),
    ("2024-05-01T08:00:00", "'2024-05-01T08:00:00' has no time zone offset"),
    ("2024-05-01", "'2024-05-01' has no time zone offset"),
    (12, "expected an ISO 8601 string, got int"),
    (None, "expected an ISO 8601 string, got NoneType"),
    ("  ", "is required"),
])
def test_one_error_format_naming_the_field(value: object, problem: str) -> None:
    with pytest.raises(IsoTimeError) as exc:
        parse_iso_datetime(value, "until")
    assert str(exc.value).startswith(f"until: {problem}")
    assert exc.value.field == "until" and exc.value.problem.startswith(problem)
    assert isinstance(exc.value, ValueError)  # callers that catch ValueError keep working


def test_a_zone_for_naive_times_only_when_the_caller_gives_one() -> None:
    assert parse_iso_datetime("2024-05-01", "--since", naive_as=UTC) == datetime(
        2024, 5, 1, tzinfo=UTC)
    assert parse_iso_datetime("2024-05-01T08:00:00+02:00", "--since", naive_as=UTC) == \
        datetime(2024, 5, 1, 6, tzinfo=UTC)


def test_every_edge_uses_it_and_says_the_same() -> None:
    naive = "2024-05-01T08:00:00"
    with pytest.raises(ApiError) as api:  # the HTTP API (and `rfidd ops ... --since`)
        parse_time(naive, "since")
    assert api.value.status == 400
    assert str(api.value).startswith(f"since: '{naive}' has no time zone offset")
    assert parse_time("1714550400", "since") == parse_time("2024-05-01T08:00:00Z", "since")
    with pytest.raises(ValueError, match=f"^eventTime: '{naive}' has no time zone offset"):
        parse_datetime(naive, "eventTime")  # EPCIS documents at HQ, replay requests
    res = parse_asn_object({"asn_id": "A1", "origin": "WH", "destination": "ST",
                            "shipped_at": naive, "epcs": ["3034257BF40C0E4000000001"]})
    [issue] = res.errors  # an ASN: the import issue names the field, the problem follows
    assert issue.field == "shipped_at" and issue.message.startswith(
        f"'{naive}' has no time zone offset")


def test_the_hq_clis_since_names_the_option() -> None:
    from rfidd.hq.cli import _since_option

    assert _since_option("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)

    @click.command()
    @click.option("--since")
    def cmd(since: str | None) -> None:
        _since_option(since)

    res = CliRunner().invoke(cmd, ["--since", "last week"])
    assert res.exit_code == 2
    assert "Invalid value for --since: 'last week' is not an ISO 8601 date-time" in res.output
