"""Structured logs: one line per event, key=value (default) or JSON, journald-friendly.

- Under systemd (JOURNAL_STREAM set) each line starts with the syslog priority `<N>`, which
  journald turns into the entry's PRIORITY (so `journalctl -p warning` works), and carries no
  timestamp (journald adds its own).
- Fields: `level`, `logger`, `msg`, and every `extra={...}` key of the call
  (`log.warning("reader down", extra={"reader": "door-1"})` -> `reader=door-1`).
- No secret reaches a line: passwords in URLs (`mqtt://user:pw@host`) and `password=...`
  fragments are masked, whatever the caller passed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

FORMATS = ("kv", "json", "text")
QUIET_LOGGERS = ("sllurp", "alembic", "apscheduler")
_STANDARD = set(vars(logging.LogRecord("x", 0, "", 0, "", None, None))) | {"message", "asctime"}
# uvicorn's `color_message` is the message again with ANSI colours: noise, escapes in journald
_DROPPED = {"color_message"}
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
           logging.CRITICAL: 2}
_URL_SECRET = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.I)
_KV_SECRET = re.compile(r"(?P<key>\b(?:password|passwd|secret|token)\w*\s*[=:]\s*)"
                        r"(?P<q>['\"]?)[^\s'\",;]+(?P=q)", re.I)
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+-]+$")


def redact(text: str) -> str:
    """Mask the secrets a message may carry (URL passwords, password=... fragments)."""
    text = _URL_SECRET.sub(r"\g<scheme>\g<user>:***@", text)
    return _KV_SECRET.sub(r"\g<key>***", text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name,
                           "msg": redact(record.getMessage())}
    for key, value in vars(record).items():
        if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
            out[key] = redact(value) if isinstance(value, str) else value
    if record.exc_info:
        out["exc"] = redact(logging.Formatter().formatException(record.exc_info))
    return out


def _kv(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    return s if s and _BARE.match(s) else json.dumps(s)


class StructuredFormatter(logging.Formatter):
    def __init__(self, fmt: str = "kv", journald: bool = False) -> None:
        super().__init__()
        self.fmt = fmt
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if not self.journald:
            fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                      + f".{int(record.msecs):03d}Z", **fields}
        if self.fmt == "json":
            line = json.dumps(fields, default=str, ensure_ascii=False)
        elif self.fmt == "text":
            extra = " ".join(f"{k}={_kv(v)}" for k, v in fields.items()
                             if k not in ("ts", "level", "logger", "msg"))
            line = (f"{fields.get('ts', '')} {record.levelname:<7} {record.name}: "
                    f"{fields['msg']}" + (f" {extra}" if extra else "")).lstrip()
        else:
            line = " ".join(f"{k}={_kv(v)}" for k, v in fields.items())
        line = line.replace("\n", "\\n") if self.fmt != "json" else line
        if self.journald:
            line = f"<{_SYSLOG.get(record.levelno, 6)}>{line}"
        return line


def on_journal(stream: TextIO) -> bool:
    """Whether `stream` is systemd's journal stream (JOURNAL_STREAM names its device:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def configure(level: str = "info", fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Set up the root logger for a CLI entry point (idempotent: replaces earlier handlers)."""
    fmt = (fmt or os.environ.get("RFIDD_LOG_FORMAT") or "kv").lower()
    if fmt not in FORMATS:
        fmt = "kv"
    lvl = getattr(logging, level.upper(), logging.INFO)
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(StructuredFormatter(fmt, journald=on_journal(out)))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    if lvl > logging.DEBUG:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(max(lvl, logging.WARNING))


class _Writer:
    """A stream for a log handler that hands each line to `write` (a live display's console)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def flush(self) -> None:
        pass


@contextmanager
def redirected(write: Callable[[str], None]) -> Iterator[None]:
    """While a live line (the demo's progress) is on the terminal: the root logger's console
    lines go through `write`, above it, not into the middle of it. Files are left as they are."""
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            swapped.append((h, h.setStream(_Writer(write))))
    try:
        yield
    finally:
        for h, old in swapped:
            h.setStream(old)


__all__ = ["FORMATS", "QUIET_LOGGERS", "StructuredFormatter", "configure", "on_journal", "redact",
           "redirected"]
