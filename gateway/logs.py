"""Logging set-up and the JSON access log.

The access log never contains a credential: no query string (tokens travel
there in some clients), no request headers, only ids the gateway assigned.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp import web

access_log = logging.getLogger("gateway.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            return json.dumps(record.msg, separators=(",", ":"), default=str)
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str, access: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    access_log.setLevel(logging.INFO if access else logging.CRITICAL + 1)
    # aiohttp's own access log is replaced by ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_request(
    request: web.BaseRequest, status: int, duration: float, reason: str | None
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    route = request.get("route")
    principal = request.get("principal")
    access_log.info(
        {
            "ts": round(time.time(), 3),
            "request_id": request.get("request_id"),
            "method": request.method,
            "path": request.rel_url.raw_path[:512],
            "route": route.name if route is not None else None,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "upstream_ms": round(request["upstream_seconds"] * 1000, 3)
            if "upstream_seconds" in request
            else None,
            "org_id": principal.org_id if principal is not None else None,
            "credential_id": principal.credential_id if principal is not None else None,
            "auth_method": principal.method if principal is not None else None,
            "client_ip": request.get("client_ip", request.remote),
            "reason": reason,
        }
    )
