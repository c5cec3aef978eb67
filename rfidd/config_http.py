"""Settings of the local HTTP server: listening, limits, TLS and credentials ([http] tables).

Kept apart from rfidd/config.py (which imports HttpConfig from here) so that the web settings
grow without growing the site config module.
"""

from __future__ import annotations

import enum
import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rfidd.credentials import cli_token_file

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(enum.StrEnum):
    POS = "pos"
    STAFF = "staff"
    MANAGER = "manager"
    OPS = "ops"


class ApiTokenConfig(_Strict):
    name: str = Field(pattern=_NAME, description="Who the token is (audited), e.g. 'pos-1'.")
    roles: list[Role] = Field(min_length=1, description="Roles the token grants.")
    file: Path = Field(
        description="File holding the token (or 'sha256:HEX' of it), or 'credential:NAME' for a "
        "systemd credential. Read at start; only its SHA-256 is kept in memory."
    )

    @field_validator("file", mode="before")
    @classmethod
    def _check_file(cls, v: Any) -> Any:
        from rfidd.config import _check_secret_file

        return _check_secret_file(v)


class AuthConfig(_Strict):
    tokens: list[ApiTokenConfig] = Field(
        default_factory=list, description="API tokens of machines (POS, ERP, Prometheus)."
    )
    users_file: Path | None = Field(
        None,
        description="Staff accounts (JSON written by `rfidd users add`: id, name, roles and the "
        "argon2 hash of each PIN or password). Without it nobody can sign in on the page.",
    )
    cli_token_file: Path = Field(
        default_factory=cli_token_file,
        description="Token of the local `rfidd` command: created at start (mode 0640, the "
        "daemon's user and group), reused while it exists; grants every role. Default "
        "$RFIDD_TOKEN_FILE, else /run/rfidd/cli-token (systemd's RuntimeDirectory=rfidd).",
    )
    session_ttl_s: float = Field(
        12 * 3600.0, gt=0, description="Lifetime of a staff session cookie after sign-in."
    )
    failure_delay_s: float = Field(
        1.0, ge=0,
        description="Extra delay per recent failed credential from one address (doubling, "
        "capped at 30 s), so guessing a PIN is slow.",
    )


class HttpTlsConfig(_Strict):
    cert_file: Path | None = Field(None, description="Server certificate chain, PEM.")
    key_file: Path | None = Field(None, description="Server private key, PEM.")

    @property
    def configured(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(_Strict):
    enabled: bool = Field(True, description="Local HTTP API, staff page and /metrics.")
    listen: str = Field(
        "127.0.0.1", description="Address to bind; anything but loopback needs [http.tls]."
    )
    port: int = Field(9750, ge=0, le=65535, description="Port of the API and /metrics (0: any).")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the page is reached by besides loopback names (DNS-rebinding "
        "guard: any other Host header is refused).",
    )
    max_connections: int = Field(
        1100, ge=1,
        description="Open connections at most; more are closed at once, so readers, database "
        "and MQTT keep file descriptors (set LimitNOFILE above it).",
    )
    idle_timeout_s: float = Field(
        10.0, gt=0,
        description="A connection that has not sent a whole request (headers and body) this "
        "long after connecting or after its last response is closed.",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted.")
    max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting accepted (422).")
    tls: HttpTlsConfig = Field(default_factory=HttpTlsConfig, description="HTTPS.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Credentials and roles.")

    @model_validator(mode="after")
    def _check_exposure(self) -> HttpConfig:
        if self.enabled and not is_loopback(self.listen) and not self.tls.configured:
            raise ValueError(exposure_message(self.listen))
        return self


def exposure_message(listen: str) -> str:
    return (f"http.listen {listen!r} is not a loopback address: set http.tls.cert_file "
            "and http.tls.key_file (staff credentials must not cross the network in clear)")


def raw_exposure_error(http: object) -> str | None:
    """The exposure check on the raw `[http]` table, so that check-config reports it beside
    the file's other mistakes (the model's own check only runs once every field is valid)."""
    if not isinstance(http, dict) or http.get("enabled") is False:
        return None
    listen, tls = http.get("listen"), http.get("tls")
    if not isinstance(listen, str) or is_loopback(listen):
        return None
    if isinstance(tls, dict) and tls.get("cert_file") and tls.get("key_file"):
        return None
    return exposure_message(listen)
