"""What the site API answers, as pydantic models: `/api/v1/openapi.json` documents every
answer for integrators (POS, ERP) from these.

The services build their answers as plain dicts (the CLI and the page read them as such); a
route names its model in `response_model=` and `AnswerRoute` serialises with
`exclude_unset`, so the JSON is the service's dict unchanged: a key the service leaves out is
not added as null. Models allow extra keys: a service that grows a field does not lose it in
the answer before the model documents it.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """A JSON object the API answers (extra keys kept as they are)."""

    model_config = ConfigDict(extra="allow")


class AnswerRoute(APIRoute):
    """A route whose answer is its model's fields as the service set them (no added nulls)."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True
        super().__init__(path, endpoint, **kwargs)


class ErrorAnswer(Answer):
    error: str = Field(description="What is wrong, naming the field or the thing not found.")


# Error answers every authenticated route may give (documented once, added to each route).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": what} for code, what in (
        (401, "No credential, or a wrong one (no detail of which part)."),
        (403, "The caller's role may not do this, or a cookie write without its CSRF token."),
        (422, "A bad body or parameter; the message names the field."),
    )}


class CsvText(Answer):
    content_type: str = Field(description="The text's media type, e.g. text/csv.")
    text: str = Field(description="The file's content (CSV with a header line).")


class Progress(Answer):
    """How far a count or a reception has got (keys depend on the session's kind)."""

    expected: int | None = Field(None, description="Items the session expects.")
    found: int | None = Field(None, description="Expected items read so far (counts).")
    received: int | None = Field(None, description="Expected items read so far (receptions).")
    missing: int | None = Field(None, description="Expected items not read yet.")
    unexpected: int | None = Field(None, description="Items read that were not expected.")


class StatusOk(Answer):
    status: str = Field(description="Always 'ok'.")


class UserInfo(Answer):
    kind: str = Field(description="token, cli or user (a staff account).")
    name: str = Field(description="Token name or staff id: what the audit records.")
    display: str = Field(description="The name to show (staff name, else `name`).")
    roles: list[str] = Field(description="Roles held: pos, staff, manager, ops.")


class SessionAnswer(Answer):
    user: UserInfo = Field(description="Who is signed in.")
    csrf: str | None = Field(description="Echo it in X-CSRF-Token on every cookie write "
                                         "(null for bearer tokens).")


class SessionState(Answer):
    signed_in: bool = Field(description="False: no credential, or one that no longer holds.")
    user: UserInfo | None = Field(description="Who is signed in (null when nobody is).")
    csrf: str | None = Field(description="As in the session answer (null when signed out or "
                                         "for bearer tokens).")


class SignedOut(Answer):
    signed_out: bool = Field(description="True: the session cookie is forgotten.")


class AuditEntryAnswer(Answer):
    id: int = Field(description="The entry's number (increasing).")
    at: float = Field(description="When (epoch seconds).")
    actor_kind: str = Field(description="token, cli or user.")
    actor: str = Field(description="Token name or staff id (an opaque id, never a name).")
    address: str = Field(description="The client's address.")
    method: str = Field(description="HTTP method.")
    path: str = Field(description="The route written to.")
    status: int = Field(description="The answer's status code.")
    detail: str | None = Field(description="What was asked (the body's gist), if anything.")


class AuditAnswer(Answer):
    entries: list[AuditEntryAnswer] = Field(description="Writes since `since`, oldest first.")


class DatabaseStatus(Answer):
    up: bool = Field(description="The database answers.")
    reason: str | None = Field(description="Why it is down (null when up).")
    since: str | None = Field(description="Since when (ISO 8601, UTC).")


class ReaderActivityAnswer(Answer):
    state: str = Field(description="connecting, online, offline, ...")
    reason: str | None = Field(description="Why it is not online, if it is not.")


class SiteStatus(Answer):
    site: str = Field(description="The site id.")
    timezone: str | None = Field(None, description="The site's time zone (IANA name): the "
                                 "command line shows times in it, with the offset.")
    uptime_s: float = Field(description="Seconds since the daemon started.")
    database: DatabaseStatus | None = Field(description="The database's health.")
    readers: dict[str, ReaderActivityAnswer] = Field(description="Each reader's state by name.")
    ingest: dict[str, Any] | None = Field(description="Read-ingest counters (reads, batches, "
                                                      "drops...), null before start.")


class ItemRecord(Answer):
    """The raw `items` row: every column of the site database's item table."""

    epc: str = Field(description="EPC, hex.")
    gtin: str | None = Field(None, description="The product's GTIN-14, when decoded.")
    zone: str | None = Field(None, description="The zone it was last read in.")
    biz_step: str | None = Field(None, description="Last CBV business step.")
    disposition: str | None = Field(None, description="Last CBV disposition.")
    last_seen: Any = Field(None, description="When it was last read.")


class ReaderRow(Answer):
    state: str = Field(description="The reader's connection state.")
    reason: str | None = Field(description="Why it is not online, if it is not.")
    silent: bool = Field(description="Connected but reporting no reads for too long.")
    no_tag_s: int | None = Field(None, description="Online, has read, but no tag for this many "
                                 "seconds (null: reading, or never read, or not online).")
    since: str = Field(description="In this state since (ISO 8601, UTC).")
    last_report: str | None = Field(description="Its last tag report (ISO 8601, UTC).")
    connects: int = Field(description="Connections made since start.")


class ReadersAnswer(Answer):
    site: str = Field(description="The site id.")
    readers: dict[str, ReaderRow] = Field(description="Each reader by name, with what its "
                                                      "driver knows of the hardware.")


class RssiSample(Answer):
    at: str = Field(description="When (ISO 8601, UTC).")
    rssi_dbm: float | None = Field(description="Signal strength: louder is closer.")


class FindAnswer(Answer):
    reader: str = Field(description="The handheld.")
    epc: str | None = Field(description="The item looked for (null: find mode off).")
    samples: list[RssiSample] = Field(description="The last 50 RSSI samples, oldest first.")
    last_rssi_dbm: float | None = Field(description="The latest sample's RSSI.")
    best_rssi_dbm: float | None = Field(description="The loudest sample so far.")


class FindRequest(BaseModel):
    epc: str | None = Field(None, max_length=128,
                            description="EPC (hex) to look for; null or absent stops finding.")
