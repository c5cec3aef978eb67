"""Backfill: ask sites to replay their journal (`cmd/replay`) and follow HQ catching up.

A new HQ, or one restored from an old backup, lacks what the sites journaled before (or while)
it was away. One command asks each registered site to replay since a time or a sequence
number; each site announces on `{site}/replay` what it queued (echoing the request id), then
republishes those events through its outbox. The running `rfidd hq run` stores them (eventID
dedup keeps it exactly-once); progress is what the HQ database holds of each announced range.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, func, select

from rfidd.hq.config import HqMqttConfig
from rfidd.hq.registry import registered_sites
from rfidd.hq.store import hq_events, hq_site_messages
from rfidd.mqtt_client import ClientSettings, MqttSetupError, build_client, connect


class BackfillError(Exception):
    """The backfill cannot be asked for (unknown site, broker unreachable); says why."""


@dataclass(slots=True)
class SiteProgress:
    site: str
    announced: bool = False
    ranges: list[tuple[int, int]] = field(default_factory=list)
    total: int = 0
    held: int = 0

    @property
    def done(self) -> bool:
        return self.announced and self.held >= self.total

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "announced": self.announced, "events": self.total,
                "held": self.held, "done": self.done}


def check_sites(engine: Engine, asked: Sequence[str]) -> list[str]:
    """The sites to ask: those named (each must be registered) or every registered one."""
    known = registered_sites(engine)
    if not asked:
        if not known:
            raise BackfillError("no site is registered at HQ: register each site first with "
                                "`rfidd hq site add SITE --name NAME`")
        return list(known)
    unknown = [s for s in asked if s not in known]
    if unknown:
        raise BackfillError(
            f"refused: {', '.join(repr(s) for s in unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} not registered at HQ (HQ stores nothing "
            "from an unregistered site, so a replay would be lost); register with "
            "`rfidd hq site add SITE --name NAME`"
            + (f"; registered: {', '.join(known)}" if known else ""))
    return list(dict.fromkeys(asked))


def request_body(since: datetime | None, from_seq: int | None, request_id: str) -> bytes:
    body: dict[str, Any] = {"request_id": request_id}
    if since is not None:
        body["since"] = since.isoformat()
    else:
        body["from_seq"] = from_seq if from_seq is not None else 1
    return json.dumps(body).encode()


def new_request_id() -> str:
    return f"backfill-{uuid.uuid4().hex[:12]}"


def publish_requests(config: HqMqttConfig, sites: Sequence[str], body: bytes,
                     timeout: float = 10.0) -> None:
    """Publish `cmd/replay` to each site (QoS 1) and wait for the broker's PUBACKs.

    A site that is offline gets it when it reconnects (its persistent session holds it).
    """
    publish_commands(config, [(f"{config.topic_prefix}/{s}/cmd/replay", body) for s in sites],
                     timeout)


def publish_commands(config: HqMqttConfig, messages: Sequence[tuple[str, bytes]],
                     timeout: float = 10.0) -> None:
    """Publish (topic, payload) commands at QoS 1 from a short-lived client; waits for the
    broker's PUBACKs. BackfillError says what failed."""
    try:
        settings = ClientSettings.from_config(
            config.site_mqtt_config(), client_id=f"{config.client_id}-cmd"[:200],
            persistent_session=False)
        client = build_client(settings)
    except (MqttSetupError, ValueError) as exc:
        raise BackfillError(str(exc)) from None
    host, port = settings.host, settings.port
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    connect(client, settings)
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused:
            raise BackfillError(f"broker {host}:{port} refused or did not answer: "
                                f"{refused[0] if refused else 'timeout'}")
        infos = [client.publish(topic, body, qos=1) for topic, body in messages]
        for (topic, _), info in zip(messages, infos, strict=True):
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                raise BackfillError(f"{topic}: not acknowledged: {exc}") from None
            if not info.is_published():
                raise BackfillError(f"{topic}: not acknowledged within {timeout}s")
    finally:
        client.disconnect()
        client.loop_stop()


def progress(engine: Engine, sites: Sequence[str], request_id: str) -> list[SiteProgress]:
    """How much of each site's announced replay HQ holds now."""
    out = []
    m, e = hq_site_messages, hq_events
    with engine.connect() as conn:
        for site in sites:
            p = SiteProgress(site)
            recent = conn.execute(
                select(m.c.payload).where(m.c.site == site, m.c.kind == "replay")
                .order_by(m.c.received_at.desc()).limit(200)
            ).scalars()
            for payload in recent:
                if isinstance(payload, dict) and payload.get("request_id") == request_id:
                    p.announced = True
                    p.ranges = [(int(a), int(b)) for a, b in payload.get("ranges") or []]
                    p.total = int(payload.get("events") or 0)
                    break
            for a, b in p.ranges:
                p.held += int(conn.execute(
                    select(func.count(func.distinct(e.c.seq)))
                    .where(e.c.site == site, e.c.seq >= a, e.c.seq <= b)
                ).scalar() or 0)
            out.append(p)
    return out
