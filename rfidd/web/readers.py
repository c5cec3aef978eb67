"""Routes about the readers: what each one is and does, and "find this item" on a handheld."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from rfidd.config_http import Role
from rfidd.reader_monitor import ReaderMonitor
from rfidd.web.answers import (
    ERRORS,
    AnswerRoute,
    ErrorAnswer,
    FindAnswer,
    FindRequest,
    ReadersAnswer,
)
from rfidd.web.deps import require
from rfidd.web.errors import ApiError

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorAnswer}}


def readers_router(site: str, monitor: ReaderMonitor) -> APIRouter:
    r = APIRouter(prefix="/api/v1/readers", tags=["readers"], route_class=AnswerRoute,
                  responses=ERRORS)

    @r.get("", dependencies=[Depends(require(Role.STAFF, Role.OPS))],
           response_model=ReadersAnswer)
    def get_readers() -> dict[str, Any]:
        """Each reader's state and what its driver knows of the hardware."""
        return {"site": site, "readers": monitor.snapshot()}

    @r.get("/{reader}/find", dependencies=[Depends(require(Role.STAFF))],
           response_model=FindAnswer, responses=_NOT_FOUND)
    def find_status(reader: str) -> dict[str, Any]:
        """The item a handheld is looking for, and its RSSI samples (louder = closer)."""
        try:
            return monitor.find_status(reader)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None

    @r.post("/{reader}/find", dependencies=[Depends(require(Role.STAFF))],
            response_model=FindAnswer,
            responses={**_NOT_FOUND, 400: {"model": ErrorAnswer}})
    def find(reader: str, body: FindRequest | None = None) -> dict[str, Any]:
        """Start finding an item on a handheld (`epc`), or stop (no `epc`)."""
        try:
            return monitor.find(reader, body.epc if body is not None else None)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    return r
