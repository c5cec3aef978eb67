"""TOML configuration of the HQ consumer (`rfidd hq run -c FILE`).

Its own file, validated like the site daemon's (unknown keys are errors, every problem reported
at once with its key path and line). The URL and topic-prefix rules are the site daemon's own,
applied through rfidd.config so both sides of the feed agree on what a valid prefix is.
"""

from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rfidd.config import ConfigError, DatabaseConfig, MqttConfig, TlsConfig, _locate

__all__ = ["ConfigError", "HqConfig", "load_hq_config", "parse_hq_config"]

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _site_rule(model: type[BaseModel], key: str, value: Any) -> Any:
    """Apply one field rule of a site-daemon model, so the two configs cannot drift apart."""
    try:
        model.model_validate({key: value})
    except ValidationError as exc:
        for err in exc.errors():
            if err["loc"] and err["loc"][0] == key:
                raise ValueError(str(err["msg"]).removeprefix("Value error, ")) from None
    return value


class HqDatabaseConfig(_Strict):
    url: str = Field(
        "postgresql+psycopg://rfidd@127.0.0.1/rfidd_hq",
        description="SQLAlchemy URL of the HQ database: postgresql+psycopg://user@host/db in "
        "production; sqlite:///path is accepted for trials.",
    )
    batch_max_messages: int = Field(
        500, ge=1, le=100_000,
        description="Commit (and then acknowledge) at most this many MQTT messages at once...",
    )
    batch_max_ms: int = Field(
        200, ge=0, description="...or after this many milliseconds of gathering, whichever first."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return str(_site_rule(DatabaseConfig, "url", v))


class HqMqttConfig(_Strict):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port or mqtts://host:port (TLS).",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT protocol version. 5 is needed for shared subscriptions (load spread "
        "over several consumers); 3.1.1 falls back to plain subscriptions, so run one "
        "consumer only.",
    )
    topic_prefix: str = Field(
        "rfidd/v1", description="The sites' topic prefix: feeds are {topic_prefix}/{site}/..."
    )
    share_group: str = Field(
        "rfidd-hq",
        description="Shared-subscription group: consumers with the same group split the feed "
        "between them, each message going to one of them.",
    )
    client_id: str = Field(
        default_factory=lambda: f"rfidd-hq-{socket.gethostname()}"[:64],
        description="MQTT client id; must be unique per consumer instance and stable across "
        "its restarts (the broker keeps the queued messages under it). Default: "
        "rfidd-hq-{hostname}.",
    )
    session_expiry_s: int = Field(
        7 * 86_400, ge=0, le=0xFFFFFFFF,
        description="How long the broker keeps this consumer's session and queued messages "
        "while it is down (MQTT 5).",
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65_535,
        description="Unacknowledged messages the broker may have in flight to this consumer "
        "(bounds memory; messages are acknowledged only once committed).",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Larger messages are refused by the broker (MQTT 5 Maximum Packet Size) "
        "or, if they arrive, counted as malformed.",
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (e.g. $CREDENTIALS_DIRECTORY/mqtt); the "
        "password itself never appears in the config or the logs.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings (mqtts://).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return str(_site_rule(MqttConfig, "url", v))

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        return str(_site_rule(MqttConfig, "topic_prefix", v))

    @field_validator("share_group")
    @classmethod
    def _check_group(cls, v: str) -> str:
        if not _GROUP.match(v):
            raise ValueError("share group: 1-64 of A-Z a-z 0-9 _ . - (no / + #)")
        return v

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, v: str) -> str:
        if not v or len(v.encode()) > 256 or any(c in v for c in "#+/\x00"):
            raise ValueError("client id: 1-256 bytes, without / + # or NUL")
        return v


class HqHttpConfig(_Strict):
    enabled: bool = Field(True, description="HTTP query API (/api/v1/...) and /metrics.")
    listen: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(9760, ge=0, le=65535, description="Port of the API and /metrics (0: any).")


class HqConfig(_Strict):
    database: HqDatabaseConfig = Field(
        default_factory=HqDatabaseConfig, description="Where events are stored."
    )
    mqtt: HqMqttConfig = Field(default_factory=HqMqttConfig, description="The sites' feed.")
    http: HqHttpConfig = Field(default_factory=HqHttpConfig, description="Query API, metrics.")


def parse_hq_config(text: str, source: str = "<hq config>") -> HqConfig:
    """Parse and validate; raise ConfigError naming every problem (key path and line)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"{source}: TOML syntax: {exc}"]) from exc
    try:
        return HqConfig.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = ".".join(str(p) for p in loc) or "(top)"
            line = _locate(text, loc)
            where = f"{source}:{line}: " if line else f"{source}: "
            msg = "unknown key (misspelled?)" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(f"{where}{path}: {msg}")
        raise ConfigError(source, errors) from exc


def load_hq_config(path: str | Path) -> HqConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), [f"not UTF-8 text: {exc}"]) from exc
    return parse_hq_config(text, str(p))
