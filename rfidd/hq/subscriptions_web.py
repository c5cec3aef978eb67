"""The query-subscription routes of the EPCIS interface (GS1 EPCIS 2.0 OpenAPI).

  POST   /queries/{name}/subscriptions          a webhook: dest, signatureToken, stream | schedule
  GET    /queries/{name}/subscriptions          the caller's subscriptions of that query
  GET/DELETE /queries/{name}/subscriptions/{id} one of them
  WS     /queries/{name}/events?stream=true     the same results over a WebSocket (or schedule
                                                fields: second, minute, hour, ...)
A subscription belongs to the integrator token that made it (read scope): another integrator
neither sees nor deletes it. The signatureToken is kept to sign each delivery (GS1-Signature,
HMAC-SHA256) and never shown again. Webhooks go to https:// destinations; plain http:// only to
a loopback address (a receiver on the HQ host itself) unless allowed by configuration.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, delete, select

from rfidd.hq import tokens
from rfidd.hq.subscriptions import (
    Listener,
    SubscriptionError,
    SubscriptionHub,
    hq_subscriptions,
    parse_schedule,
)

Who = Callable[[Request, str], tokens.Integrator]
_BODY_KEYS = {"dest", "signatureToken", "stream", "schedule", "reportIfEmpty",
              "initialRecordTime"}
WS_QUEUE_MAX = 1000


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_dest(dest: Any, allow_http: bool) -> str:
    """A webhook destination HQ may call: https, or http to loopback (or when allowed)."""
    if not isinstance(dest, str) or len(dest) > 2048:
        raise SubscriptionError("dest", "dest: a URL of at most 2048 characters")
    u = urlsplit(dest)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise SubscriptionError("dest", f"dest {dest[:100]!r}: an http(s):// URL")
    if u.username or u.password:
        raise SubscriptionError("dest", "dest: no credentials in the URL; use "
                                "signatureToken to authenticate HQ's deliveries")
    if u.scheme == "http" and not allow_http:
        try:
            loopback = ipaddress.ip_address(u.hostname).is_loopback
        except ValueError:
            loopback = u.hostname == "localhost"
        if not loopback:
            raise SubscriptionError("dest", f"dest {dest[:100]!r}: https:// required (plain "
                                    "http only to a loopback address)")
    return dest


def parse_subscription(body: Any, allow_http: bool) -> dict[str, Any]:
    """The POST body -> hq_subscriptions values; SubscriptionError names the field."""
    if not isinstance(body, dict):
        raise SubscriptionError("", "expected an object: dest, signatureToken, and stream: "
                                "true or a schedule")
    extra = sorted(set(body) - _BODY_KEYS)
    if extra:
        raise SubscriptionError(extra[0], f"{extra[0]!r} is not a subscription field")
    initial = body.get("initialRecordTime")
    dest = check_dest(body.get("dest"), allow_http)
    secret = body.get("signatureToken")
    if secret is not None and (not isinstance(secret, str) or not 1 <= len(secret) <= 512):
        raise SubscriptionError("signatureToken", "signatureToken: 1-512 characters")
    report = body.get("reportIfEmpty", False)
    if not isinstance(report, bool):
        raise SubscriptionError("reportIfEmpty", "reportIfEmpty: true or false")
    return {"dest": dest, "secret": secret, "report_if_empty": report,
            "cursor_at": None if initial is None else record_time(initial),
            **controls(body.get("stream"), body.get("schedule"))}


def record_time(value: Any) -> datetime:
    """initialRecordTime: an ISO 8601 date-time with its offset (what GS1's OpenAPI says)."""
    from inventory.isotime import IsoTimeError, parse_iso_datetime

    try:
        return parse_iso_datetime(value, "initialRecordTime").astimezone(UTC)
    except IsoTimeError as exc:
        raise SubscriptionError("initialRecordTime", exc.problem) from None


def controls(stream: Any, schedule: Any) -> dict[str, Any]:
    if stream is not None and schedule is not None:
        raise SubscriptionError("stream", "stream and schedule are mutually exclusive")
    if schedule is not None:
        if not isinstance(schedule, dict):
            raise SubscriptionError("schedule", "schedule: an object of second, minute, "
                                    "hour, dayOfMonth, month, dayOfWeek")
        return {"stream": False, "schedule": parse_schedule(schedule)}
    if stream is not True:
        raise SubscriptionError("stream", "set stream: true (every new matching event) or "
                                "give a schedule")
    return {"stream": True, "schedule": None}


def _public(r: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"subscriptionID": r.subscription_id, "queryName": r.query_name,
                           "dest": r.dest, "createdAt": _iso(r.created_at),
                           "reportIfEmpty": bool(r.report_if_empty)}
    if r.stream:
        out["stream"] = True
    else:
        out["schedule"] = dict(r.schedule)
    if r.last_notified_at is not None:
        out["lastNotifiedAt"] = _iso(r.last_notified_at)
    if r.cursor_at is not None:  # GS1's minRecordTime: where the next delivery starts
        out["minRecordTime"] = _iso(r.cursor_at)
    return out


def register(app: FastAPI, engine: Engine, who: Who, hub: SubscriptionHub, *,
             problem: Callable[[int, str, str], Exception],
             stored_query: Callable[[str], dict[str, Any]],
             allow_http: bool = False) -> None:
    """Add the subscription routes to the EPCIS app (`problem` builds its RFC 7807 errors)."""

    def refused(exc: SubscriptionError) -> Exception:
        kind = "SubscriptionControlsException" if exc.field.split("/")[0] in (
            "stream", "schedule", "initialRecordTime") else "ValidationException"
        return problem(400, kind, f"/{exc.field}: {exc}")

    @app.options("/queries/{name}/subscriptions")
    def options_subscriptions(name: str) -> Response:
        return Response(status_code=204, headers={"Allow": "GET, POST, OPTIONS"})

    @app.post("/queries/{name}/subscriptions")
    async def subscribe(name: str, request: Request) -> JSONResponse:
        owner = who(request, "read")
        stored_query(name)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise problem(400, "ValidationException", f"/: not JSON: {exc}") from None
        try:
            values = parse_subscription(body, allow_http)
        except SubscriptionError as exc:
            raise refused(exc) from None
        sid = str(uuid.uuid4())
        now = datetime.now(UTC)
        # The cursor: initialRecordTime, or now (a stream replays [cursor, attach time) once
        # attached: what commits while the hub loads it is not missed).
        values["cursor_at"] = values["cursor_at"] or now
        with engine.begin() as conn:
            conn.execute(hq_subscriptions.insert().values(
                subscription_id=sid, query_name=name, owner=owner.name, created_at=now,
                **values))
            row = conn.execute(select(hq_subscriptions).where(
                hq_subscriptions.c.subscription_id == sid)).one()
        hub.changed()
        return JSONResponse(_public(row), status_code=201, headers={
            "Location": f"/queries/{quote(name)}/subscriptions/{sid}"})

    def mine(name: str, owner: str) -> Any:
        return select(hq_subscriptions).where(hq_subscriptions.c.query_name == name,
                                              hq_subscriptions.c.owner == owner)

    @app.get("/queries/{name}/subscriptions")
    def list_subscriptions(name: str, request: Request) -> JSONResponse:
        owner = who(request, "read")
        stored_query(name)
        with engine.connect() as conn:
            rows = conn.execute(mine(name, owner.name)
                                .order_by(hq_subscriptions.c.created_at)).all()
        return JSONResponse([_public(r) for r in rows])

    def one(name: str, sid: str, owner: str) -> Any:
        with engine.connect() as conn:
            row = conn.execute(mine(name, owner).where(
                hq_subscriptions.c.subscription_id == sid)).first()
        if row is None:
            raise problem(404, "NoSuchSubscriptionException",
                          f"no subscription {sid!r} of query {name!r}")
        return row

    @app.get("/queries/{name}/subscriptions/{sid}")
    def get_subscription(name: str, sid: str, request: Request) -> JSONResponse:
        return JSONResponse(_public(one(name, sid, who(request, "read").name)))

    @app.delete("/queries/{name}/subscriptions/{sid}")
    def unsubscribe(name: str, sid: str, request: Request) -> Response:
        one(name, sid, who(request, "read").name)
        with engine.begin() as conn:
            conn.execute(delete(hq_subscriptions).where(
                hq_subscriptions.c.subscription_id == sid))
        hub.changed()
        return Response(status_code=204)

    @app.websocket("/queries/{name}/events")
    async def stream(websocket: WebSocket, name: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            if not websocket.headers.get("authorization"):  # no cookie: no cross-site socket
                raise problem(401, "SecurityException", "an integrator token is required: "
                              "Authorization: Bearer TOKEN (rfidd hq token add)")
            await loop.run_in_executor(None, who, websocket, "read")  # type: ignore[arg-type]
            await loop.run_in_executor(None, stored_query, name)
            listener = _socket_listener(websocket, name)
        except Exception as exc:
            status = int(getattr(exc, "status", 400))
            await websocket.send_denial_response(JSONResponse(
                {"type": f"epcisException:{getattr(exc, 'kind', 'SubscriptionControlsException')}",
                 "title": "Subscription refused", "status": status,
                 "detail": getattr(exc, "detail", str(exc))}, status_code=status,
                media_type="application/problem+json"))
            return
        # Bounded by hand: past WS_QUEUE_MAX documents the client is too far behind; what is
        # queued is sent, then the socket is closed (1013) so it knows to query again.
        box: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        behind = False

        def put(doc: dict[str, Any]) -> None:  # on the event loop
            nonlocal behind
            if behind or box.qsize() >= WS_QUEUE_MAX:
                hub.metrics.deliveries.labels("websocket", "dropped").inc()
                if not behind:
                    behind = True
                    box.put_nowait(None)
                return
            box.put_nowait(doc)

        def deliver(doc: dict[str, Any], _recorded: datetime | None = None) -> None:
            # on the hub's thread; a socket keeps no position (it lives with its connection)
            loop.call_soon_threadsafe(put, doc)

        listener.deliver = deliver
        # Attached before the handshake completes: an event stored once the client sees the
        # connection open is in its stream (queued until the loop below sends it).
        hub.attach(listener)
        try:
            await websocket.accept()
        except Exception:
            hub.detach(listener.subscription_id)
            raise
        closed = asyncio.ensure_future(_until_closed(websocket))
        try:
            while not closed.done():
                getter = asyncio.ensure_future(box.get())
                done, _ = await asyncio.wait({getter, closed},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                doc = getter.result()
                if doc is None:
                    await websocket.close(code=1013, reason="too far behind")
                    break
                await websocket.send_text(json.dumps(doc))
                hub.metrics.deliveries.labels("websocket", "delivered").inc()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.detach(listener.subscription_id)
            closed.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return


def _socket_listener(websocket: WebSocket, name: str) -> Listener:
    q = websocket.query_params
    allowed = {"stream", "reportIfEmpty", "initialRecordTime", "second", "minute", "hour",
               "dayOfMonth", "month", "dayOfWeek"}
    extra = sorted(set(q) - allowed)
    if extra:
        raise SubscriptionError(extra[0], f"query parameter {extra[0]!r} is not a "
                                "subscription control")
    schedule = {k: q[k] for k in allowed - {"stream", "reportIfEmpty", "initialRecordTime"}
                if k in q}
    stream = q.get("stream")
    if stream is not None and stream != "true":
        raise SubscriptionError("stream", "stream: true")
    c = controls(True if stream else None, schedule or None)
    report = q.get("reportIfEmpty", "false")
    if report not in ("true", "false"):
        raise SubscriptionError("reportIfEmpty", "reportIfEmpty: true or false")
    initial = q.get("initialRecordTime")
    since = datetime.now(UTC) if initial is None else record_time(initial)
    return Listener(f"ws-{uuid.uuid4()}", name, "websocket", _nowhere,
                    stream=c["stream"], schedule=c["schedule"],
                    report_if_empty=report == "true", cursor_at=since,
                    replay=c["stream"] and initial is not None)


def _nowhere(_doc: dict[str, Any], _recorded: datetime | None) -> None:
    """A socket listener's deliver until its connection's own is set."""
