"""POST /capture and its jobs (GS1 EPCIS 2.0 OpenAPI), on the HQ app.

A document is checked whole before anything is stored (media type, size and event limits,
GS1's JSON Schema, HQ's own parse), then stored in one transaction: the answer is 202 with
`Location: /capture/{captureID}`, the job already finished (the spec lets a server answer a
document's validation errors synchronously: a 400 naming each path, nothing stored).
`GS1-Capture-Error-Behaviour`: `rollback` (the default: one bad event refuses the document) or
`proceed` (the valid events are stored, the bad ones are the job's errors, success false);
`all` is refused with its name. GET /capture lists the caller's jobs, newest first.
Both an EPCISDocument and an EPCISQueryDocument are captured (the OpenAPI: "This endpoint
should support both"): the query document's events are those of queryResults.resultsBody.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Column, String, Table, select

from rfidd.hq import tokens
from rfidd.hq.documents import DocumentError, parse_document
from rfidd.hq.store import CAPTURE_SOURCE, Batch, HqStore, Json, hq_captures, metadata
from rfidd.hq.subscriptions import SubscriptionHub

log = logging.getLogger(__name__)

# A capture job's outcome beyond hq_captures' counts: its error behaviour and errors.
hq_capture_outcomes = Table(
    "hq_capture_outcomes",
    metadata,
    Column("capture_id", String(64), primary_key=True),
    Column("behaviour", String(16), nullable=False),
    Column("errors", Json, nullable=False),
)

_JSON_TYPES = ("application/json", "application/ld+json")
# Where each document type holds its events (JSON pointer, and the keys to walk).
_LISTS = {"EPCISDocument": ("/epcisBody/eventList", ("epcisBody", "eventList")),
          "EPCISQueryDocument": ("/epcisBody/queryResults/resultsBody/eventList",
                                 ("epcisBody", "queryResults", "resultsBody", "eventList"))}
BEHAVIOURS = ("rollback", "proceed")
MAX_ERRORS = 1000
Who = Callable[[Request, str], tokens.Integrator]


def _event_list(doc: Any) -> tuple[str | None, Any]:
    """(the JSON pointer of the document's event list, the list) or (None, None)."""
    kind = doc.get("type") if isinstance(doc, dict) else None
    where = _LISTS.get(kind) if isinstance(kind, str) else None
    if where is None:
        return None, None
    node: Any = doc
    for key in where[1]:
        node = node.get(key) if isinstance(node, dict) else None
    return where[0], node


def _as_document(doc: dict[str, Any], events: list[Any]) -> bytes:
    """The captured events as an EPCISDocument (what parse_document reads)."""
    head = {k: doc[k] for k in ("@context", "schemaVersion", "creationDate") if k in doc}
    return json.dumps({**head, "type": "EPCISDocument",
                       "epcisBody": {"eventList": events}}).encode()


def _iso(t: datetime) -> str:
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def register(app: FastAPI, store: HqStore, who: Who, hub: SubscriptionHub, metrics: Any, *,
             problem: Callable[..., Exception], errors_of: Callable[..., list[str]],
             capture_limit: int, capture_size_limit: int) -> None:
    engine = store.engine
    limits = {"GS1-EPCIS-Capture-Limit": str(capture_limit),
              "GS1-EPCIS-Capture-File-Size-Limit": str(capture_size_limit)}

    def refuse(status: int, kind: str, detail: str) -> Exception:
        metrics.captures.labels("invalid").inc()
        return problem(status, kind, detail, limits)

    @app.options("/capture")
    def capture_options() -> Response:
        return Response(status_code=204, headers={**limits, "Allow": "GET, OPTIONS, POST"})

    @app.post("/capture")
    async def capture(request: Request) -> Response:
        owner = who(request, "capture")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in _JSON_TYPES:
            raise problem(415, "UnsupportedMediaTypeException",
                          f"Content-Type {ctype or 'missing'}: send application/json or "
                          "application/ld+json")
        behaviour = request.headers.get("GS1-Capture-Error-Behaviour", "rollback").lower()
        if behaviour not in BEHAVIOURS:
            raise refuse(400, "ValidationException", f"GS1-Capture-Error-Behaviour "
                         f"{behaviour!r}: rollback or proceed")
        body = await request.body()
        if len(body) > capture_size_limit:
            raise refuse(413, "CaptureLimitExceededException",
                         f"{len(body)} bytes, over the {capture_size_limit}-byte limit")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise refuse(400, "ValidationException", f"/: not JSON: {exc}") from None
        pointer, event_list = _event_list(doc)
        n = len(event_list) if isinstance(event_list, list) else 0
        if n > capture_limit:
            raise refuse(413, "CaptureLimitExceededException",
                         f"{n} events, over the {capture_limit}-event limit")
        if pointer is None:
            kind = doc.get("type") if isinstance(doc, dict) else None
            raise refuse(400, "ValidationException", f"/type: {str(kind)[:40]!r}, expected "
                         "EPCISDocument or EPCISQueryDocument (a bare event is captured "
                         "inside an EPCISDocument's epcisBody.eventList)")
        errors = errors_of(doc, limit=MAX_ERRORS)
        dropped: set[int] = set()
        kept = event_list if isinstance(event_list, list) else []
        if errors and behaviour == "proceed" and pointer and isinstance(event_list, list):
            in_event = re.compile(re.escape(pointer) + r"/(\d+)(?:/|:)")
            at = [in_event.match(e) for e in errors]
            if all(at):  # every error is inside an event: store the others
                dropped = {int(m.group(1)) for m in at if m}
                kept = [e for i, e in enumerate(event_list) if i not in dropped]
        if errors and not dropped:
            log.warning("capture from %s refused: %s", owner.name, errors[0])
            raise refuse(400, "ValidationException", "; ".join(errors[:10]))
        try:
            parsed = parse_document(_as_document(doc, kept), f"{CAPTURE_SOURCE}{owner.name}"[:64])
        except DocumentError as exc:
            raise refuse(400, "ValidationException", f"/: {exc}") from None
        base = (pointer or "/epcisBody/eventList").removesuffix("/eventList")
        parse_errors = [f"{base}/{e}" for e in parsed.errors]
        if parse_errors and behaviour == "rollback":
            raise refuse(400, "ValidationException", "; ".join(parse_errors[:10]))
        result = store.write_batch(Batch(events=parsed.events, trusted=True))
        hub.offer(result.event_ids)
        capture_id = uuid.uuid4().hex
        job_errors = errors + parse_errors
        with engine.begin() as conn:
            conn.execute(hq_captures.insert().values(
                capture_id=capture_id, owner=owner.name, created_at=datetime.now(UTC),
                events=n, stored=result.stored))
            conn.execute(hq_capture_outcomes.insert().values(
                capture_id=capture_id, behaviour=behaviour, errors=job_errors))
        metrics.captures.labels("accepted" if not job_errors else "partial").inc()
        return Response(status_code=202, headers={**limits,
                                                  "Location": f"/capture/{capture_id}"})

    def job(r: Any) -> dict[str, Any]:
        created = _iso(r.created_at)
        errors = list(r.errors or [])
        return {"captureID": r.capture_id, "createdAt": created, "finishedAt": created,
                "running": False, "success": not errors,
                "captureErrorBehaviour": r.behaviour or "rollback", "errors": errors,
                "rfidd:events": r.events, "rfidd:stored": r.stored}

    def jobs(owner: str) -> Any:
        o = hq_capture_outcomes
        return (select(hq_captures, o.c.behaviour, o.c.errors)
                .outerjoin(o, o.c.capture_id == hq_captures.c.capture_id)
                .where(hq_captures.c.owner == owner))

    @app.get("/capture")
    def capture_jobs(request: Request) -> JSONResponse:
        owner = who(request, "capture")
        with engine.connect() as conn:
            rows = conn.execute(jobs(owner.name).order_by(hq_captures.c.created_at.desc())
                                .limit(100)).all()
        return JSONResponse([job(r) for r in rows])

    @app.get("/capture/{capture_id}")
    def capture_job(capture_id: str, request: Request) -> JSONResponse:
        owner = who(request, "capture")
        with engine.connect() as conn:
            r = conn.execute(jobs(owner.name).where(
                hq_captures.c.capture_id == capture_id)).first()
        if r is None:
            raise problem(404, "NoSuchResourceException", f"no capture job {capture_id!r}")
        return JSONResponse(job(r))
