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


AUTH_HINT = ("not authenticated: run as the daemon's user or group (token file "
             f"{DEFAULT_CLI_TOKEN_FILE}), or set RFIDD_TOKEN / RFIDD_TOKEN_FILE")
