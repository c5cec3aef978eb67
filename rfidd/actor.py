"""Who caused what is being done: set by the web layer for the request being served, read
when events are staged, so HQ sees the opaque staff id (or token name) of each event a person
or machine caused (EPCIS extension `rfidd:actor`). Never a person's name."""

from __future__ import annotations

from contextvars import ContextVar

current_actor: ContextVar[str | None] = ContextVar("rfidd_actor", default=None)
