"""HTTP: the API, authentication, the guard and the staff page (FastAPI on uvicorn).

What app.py wires: WebServer(http_config, metrics, audit=AuditLog(db)), then
`include_router(...)` for each service's router, `start()` and `stop()`.
"""

from __future__ import annotations

from rfidd.web.audit import AuditLog
from rfidd.web.errors import ApiError
from rfidd.web.server import WebServer
from rfidd.web.site import site_router

__all__ = ["ApiError", "AuditLog", "WebServer", "site_router"]
