"""Settings of the link to HQ ([mqtt] and its [mqtt.tls]) and the secret files they name.

Kept apart from rfidd/config.py (which imports them from here): the site link, the HQ consumer
and the relay all read these, and the secret-file rules (`credential:NAME`) live with them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


CREDENTIAL_PREFIX = "credential:"
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_@:.-]{1,255}$")


def resolve_secret_file(
    value: Path, setting: str, environ: Mapping[str, str] | None = None
) -> Path:
    """`credential:NAME` -> $CREDENTIALS_DIRECTORY/NAME; any other path is returned unchanged.

    Resolved when the secret is read, not at config load: `rfidd check-config` runs anywhere,
    while systemd sets CREDENTIALS_DIRECTORY (LoadCredential=) only in the service's processes,
    under a path that depends on the unit name. Raises ValueError naming `setting`.
    """
    text = str(value)
    if not text.startswith(CREDENTIAL_PREFIX):
        return value
    name = text[len(CREDENTIAL_PREFIX):]
    directory = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError(
            f"{setting} {text}: $CREDENTIALS_DIRECTORY is not set (run under systemd with "
            f"LoadCredential={name}:/path/to/secret, or give the file's path instead)"
        )
    return Path(directory) / name


def _check_secret_file(v: Any) -> Any:
    """The `credential:NAME` form names one file of the credentials directory, nothing else."""
    if isinstance(v, str | Path) and str(v).startswith(CREDENTIAL_PREFIX):
        name = str(v)[len(CREDENTIAL_PREFIX):]
        if not _CREDENTIAL_NAME.match(name) or name in (".", ".."):
            raise ValueError(
                f"{str(v)!r}: a systemd credential name (letters, digits, _ @ : . -; no /) "
                "must follow 'credential:'"
            )
    return v


class TlsConfig(_Strict):
    ca_file: Path | None = Field(
        None,
        description="PEM CA bundle that signs the broker's certificate; without it an mqtts:// "
        "URL is verified against the system trust store.",
    )
    cert_file: Path | None = Field(
        None, description="Client certificate, PEM (mutual TLS), optional; may hold the key too."
    )
    key_file: Path | None = Field(
        None, description="Client private key, PEM, unencrypted (mutual TLS); needs cert_file. "
        "Default: the key is in cert_file."
    )
    insecure: bool = Field(
        False,
        description="Skip the check that the certificate names the broker's host (testing "
        "only); the certificate chain is still verified.",
    )

    @model_validator(mode="after")
    def _check_key(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file needs tls.cert_file (the client certificate)")
        return self

    @property
    def configured(self) -> bool:
        return (self.ca_file is not None or self.cert_file is not None
                or self.key_file is not None or self.insecure)


class MqttConfig(_Strict):
    enabled: bool = Field(True, description="Publish to HQ; false keeps events in the outbox.")
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    topic_prefix: str = Field(
        "rfidd/v1", description="Topics are {topic_prefix}/{site.id}/...; no wildcards."
    )
    client_id: str | None = Field(None, description="MQTT client id; default rfidd-{site.id}.")
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (UTF-8, one trailing newline ignored), "
        "or 'credential:NAME' for the systemd credential NAME ($CREDENTIALS_DIRECTORY/NAME, "
        "from LoadCredential=NAME:...). Read when the link starts; the password itself never "
        "appears in the config, the logs or error messages.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings (mqtts://).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    reconnect_max_s: float = Field(
        60.0, ge=1, le=3600,
        description="Longest wait between reconnection attempts to HQ (doubling from 1 s, with "
        "jitter): lower drains the outbox sooner after an outage, higher spares the broker "
        "when hundreds of sites come back at once.",
    )
    max_events_per_document: int = Field(
        200, ge=1, le=10000, description="EPCIS events batched into one EPCISDocument."
    )
    outbox_alert_rows: int = Field(
        100_000, ge=1, description="Raise an alert when the outbox backlog passes this many rows."
    )
    require_signed_commands: bool = Field(
        False, description="Refuse state-changing HQ commands (sale, return, shipment, hold, "
        "transfer...) that are not a JWS (Ed25519) signed by HQ's key.")
    command_public_key_file: Path | None = Field(
        None, description="HQ's Ed25519 public key (PEM) that signs commands; needed by "
        "require_signed_commands.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not re.match(r"^mqtts?://[^/:]+(:\d{1,5})?/?$", v):
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if any(c in v for c in "#+\x00") or v.startswith("/") or v.endswith("/") or not v:
            raise ValueError("topic prefix must not contain # or +, nor start or end with /")
        return v

    @field_validator("password_file", mode="before")
    @classmethod
    def _check_password_file(cls, v: Any) -> Any:
        return _check_secret_file(v)

    @model_validator(mode="after")
    def _check_signing(self) -> MqttConfig:
        if self.require_signed_commands and self.command_public_key_file is None:
            raise ValueError("mqtt.require_signed_commands needs mqtt.command_public_key_file")
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> MqttConfig:
        # TLS on an mqtt:// URL would be a guess (which port?); plain text with TLS settings
        # would send the password in clear: both are refused.
        if self.tls.configured and not self.url.startswith("mqtts://"):
            raise ValueError("tls settings need an mqtts:// url (TLS); the url is mqtt://")
        return self

    def resolved_password_file(self, environ: Mapping[str, str] | None = None) -> Path | None:
        """The password file's path, `credential:NAME` resolved (ValueError when it cannot be)."""
        if self.password_file is None:
            return None
        return resolve_secret_file(self.password_file, "mqtt.password_file", environ)
