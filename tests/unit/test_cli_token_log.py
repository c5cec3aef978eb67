"""The warning for an unwritable CLI token file keeps its reason: the log redactor reads
"cli-token: No such file" as a `token: <secret>` pair and used to print "*** such file"."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rfidd.logs import StructuredFormatter
from rfidd.web.auth import ensure_cli_token


def test_missing_directory_is_logged_with_its_reason(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rfidd.web"):
        assert ensure_cli_token(tmp_path / "absent" / "cli-token") is None
    lines = [StructuredFormatter("kv").format(r) for r in caplog.records]
    assert lines and any("No such file or directory" in line for line in lines), lines
    assert not any("***" in line for line in lines), lines
