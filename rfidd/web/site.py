"""Routes about the site itself: status and the raw item record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from rfidd.config_http import Role
from rfidd.web.deps import require
from rfidd.web.errors import ApiError


def site_router(status: Callable[[], dict[str, Any]],
                item: Callable[[str], dict[str, Any] | None]) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["site"])

    @r.get("/status", dependencies=[Depends(require(*Role))])
    def get_status() -> dict[str, Any]:
        return status()

    @r.get("/items/{epc}", dependencies=[Depends(require(Role.STAFF, Role.POS))])
    def get_item(epc: str) -> dict[str, Any]:
        found = item(epc)
        if found is None:
            raise ApiError(404, f"unknown item {epc}")
        return found

    return r
