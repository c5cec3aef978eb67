"""The local `rfidd` command's credential: $RFIDD_TOKEN, else the token file the daemon writes
($RFIDD_TOKEN_FILE, default /run/rfidd/cli-token, readable by the daemon's user and group)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CLI_TOKEN_FILE = "/run/rfidd/cli-token"


def cli_token_file() -> Path:
    return Path(os.environ.get("RFIDD_TOKEN_FILE") or DEFAULT_CLI_TOKEN_FILE)


def client_token() -> str | None:
    token = os.environ.get("RFIDD_TOKEN")
    if token:
        return token.strip()
    try:
        return cli_token_file().read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def auth_headers() -> dict[str, str]:
    token = client_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def auth_hint() -> str:
    """What to do about a 401, naming the credential this command really sent: $RFIDD_TOKEN,
    the token file it read, or none (and why the file gave none)."""
    if (os.environ.get("RFIDD_TOKEN") or "").strip():
        return ("not authenticated: the daemon refused the token in RFIDD_TOKEN (not one of "
                "its tokens?); unset RFIDD_TOKEN to use the daemon's token file "
                f"({cli_token_file()}), or set it to a token the daemon knows")
    path = cli_token_file()
    named = "RFIDD_TOKEN_FILE" if os.environ.get("RFIDD_TOKEN_FILE") else "the default"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return (f"not authenticated: no token sent (RFIDD_TOKEN is not set and the token file "
                f"{path}, {named}, cannot be read: {why}); run as the daemon's user or group, "
                "or set RFIDD_TOKEN / RFIDD_TOKEN_FILE")
    if not token:
        return (f"not authenticated: no token sent (the token file {path}, {named}, is "
                "empty); set RFIDD_TOKEN / RFIDD_TOKEN_FILE")
    return (f"not authenticated: the daemon refused the token of {path} ({named}): is it this "
            "daemon's token file (http.auth.cli_token_file; a restarted daemon writes a new "
            "one)? or set RFIDD_TOKEN")
