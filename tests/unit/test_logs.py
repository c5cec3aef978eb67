"""Structured log lines: fields, formats, journald priority, no secrets."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rfidd.logs import configure, redact


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _emit(fmt: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure("info", fmt, stream=out)
    log = logging.getLogger("rfidd.test")
    log.warning("reader %s down", "door-1", extra={"reader": "door-1", "since_s": 61.5})
    log.debug("not shown")
    return out.getvalue()


def test_key_value_lines_carry_the_fields(monkeypatch: pytest.MonkeyPatch,
                                          restore_logging: None) -> None:
    line = _emit("kv", monkeypatch)
    assert line.count("\n") == 1
    assert line.startswith("ts=20")
    assert ('level=warning logger=rfidd.test msg="reader door-1 down" reader=door-1 '
            'since_s=61.5\n') in line


def test_json_lines_parse(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    doc = json.loads(_emit("json", monkeypatch))
    assert doc["level"] == "warning" and doc["msg"] == "reader door-1 down"
    assert doc["reader"] == "door-1" and doc["since_s"] == 61.5


def test_journald_gets_a_priority_and_no_timestamp(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   restore_logging: None) -> None:
    with (tmp_path / "journal").open("w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure("info", "kv", stream=stream)  # type: ignore[arg-type]
        logging.getLogger("rfidd.x").error("boom\nsecond line")
        stream.seek(0)
        text = stream.read()
    assert text == '<3>level=error logger=rfidd.x msg="boom\\nsecond line"\n'


def test_an_exception_stays_on_one_line(monkeypatch: pytest.MonkeyPatch,
                                        restore_logging: None) -> None:
    out = io.StringIO()
    configure("info", "kv", stream=out)
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        logging.getLogger("rfidd").exception("failed")
    assert out.getvalue().count("\n") == 1 and "RuntimeError: bad" in out.getvalue()


@pytest.mark.parametrize(("text", "shown"), [
    ("mqtts://site-1:hunter2@broker:8883", "mqtts://site-1:***@broker:8883"),
    ("postgresql+psycopg://rfidd:s3cr3t@db/rfidd", "postgresql+psycopg://rfidd:***@db/rfidd"),
    ("password=hunter2 user=x", "password=*** user=x"),
    ("Password: 'hunter2'", "Password: ***"),
    ("no secret here", "no secret here"),
])
def test_secrets_never_reach_a_line(text: str, shown: str, monkeypatch: pytest.MonkeyPatch,
                                    restore_logging: None) -> None:
    assert redact(text) == shown
    out = io.StringIO()
    configure("info", "json", stream=out)
    logging.getLogger("rfidd").info("connecting to %s", text, extra={"url": text})
    assert "hunter2" not in out.getvalue() and "s3cr3t" not in out.getvalue()


def test_uvicorn_color_message_and_escapes_stay_out(monkeypatch: pytest.MonkeyPatch,
                                                    restore_logging: None) -> None:
    """uvicorn logs with extra `color_message` (the message with ANSI colours): it is the msg
    again, with escapes journald shows as \\u001b; a structured line carries the msg once."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    # An HQ server started earlier in the same process sets uvicorn.error to WARNING.
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger("uvicorn"), "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)
    out = io.StringIO()
    configure("info", "kv", stream=out)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    line = out.getvalue()
    assert 'msg="Started server process [42]"' in line, line
    assert "color_message" not in line and "\x1b" not in line and "u001b" not in line, line


def test_log_lines_go_above_a_live_progress_line(monkeypatch: pytest.MonkeyPatch,
                                                 restore_logging: None) -> None:
    """The demo's progress line and a warning logged meanwhile: the warning is printed by the
    live display's console on a line of its own, not into the progress line on stderr."""
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from rfidd.logs import redirected

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    direct = io.StringIO()
    configure("info", "kv", stream=direct)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with Progress(TextColumn("{task.description}"), console=console) as progress, redirected(
            lambda s: progress.console.print(s, end="", markup=False, highlight=False)):
        progress.add_task("3/3 readers online", total=None)
        progress.refresh()
        logging.getLogger("rfidd.test").warning("exit alert")
    assert direct.getvalue() == ""
    shown = [ln for ln in screen.getvalue().replace("\r", "\n").split("\n") if "exit alert" in ln]
    assert len(shown) == 1 and "readers online" not in shown[0], screen.getvalue()
    logging.getLogger("rfidd.test").warning("after")
    assert "after" in direct.getvalue()  # the handler's own stream again
