"""Routes about the site itself: status and the raw item record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from rfidd.config_http import Role
from rfidd.web.answers import ERRORS, AnswerRoute, ErrorAnswer, ItemRecord, SiteStatus
from rfidd.web.deps import require
from rfidd.web.errors import ApiError


def site_router(status: Callable[[], dict[str, Any]],
                item: Callable[[str], dict[str, Any] | None]) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["site"], route_class=AnswerRoute, responses=ERRORS)

    @r.get("/status", dependencies=[Depends(require(*Role))], response_model=SiteStatus)
    def get_status() -> dict[str, Any]:
        """The daemon's health: database, readers, ingest counters."""
        return status()

    @r.get("/items/{epc}", dependencies=[Depends(require(Role.STAFF, Role.POS))],
           response_model=ItemRecord, responses={404: {"model": ErrorAnswer}})
    def get_item(epc: str) -> dict[str, Any]:
        """The item's raw record (every column of the site's items table)."""
        found = item(epc)
        if found is None:
            raise ApiError(404, f"unknown item {epc}")
        return found

    return r
