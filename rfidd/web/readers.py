"""Routes about the readers: what each one is and does, and "find this item" on a handheld."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from rfidd.config_http import Role
from rfidd.reader_monitor import ReaderMonitor
from rfidd.web.deps import require
from rfidd.web.errors import ApiError


def readers_router(site: str, monitor: ReaderMonitor) -> APIRouter:
    r = APIRouter(prefix="/api/v1/readers", tags=["readers"])

    @r.get("", dependencies=[Depends(require(Role.STAFF, Role.OPS))])
    def get_readers() -> dict[str, Any]:
        return {"site": site, "readers": monitor.snapshot()}

    @r.get("/{reader}/find", dependencies=[Depends(require(Role.STAFF))])
    def find_status(reader: str) -> dict[str, Any]:
        try:
            return monitor.find_status(reader)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None

    @r.post("/{reader}/find", dependencies=[Depends(require(Role.STAFF))])
    def find(reader: str, body: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:
        try:
            return monitor.find(reader, body.get("epc"))
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    return r
