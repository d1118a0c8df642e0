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

from gateway.errors import GatewayError
from gateway.exchange import Exchange

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
    request: web.Request,
    exchange: Exchange,
    status: int,
    duration: float,
    error: GatewayError | None,
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    principal = exchange.principal
    upstream = exchange.upstream_seconds
    access_log.info(
        {
            "ts": round(time.time(), 3),
            "request_id": exchange.request_id,
            "method": request.method,
            "path": request.rel_url.raw_path[:512],
            "route": exchange.route.name if exchange.route is not None else exchange.endpoint,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "upstream_ms": round(upstream * 1000, 3) if upstream is not None else None,
            "org_id": principal.org_id if principal is not None else None,
            "credential_id": principal.credential_id if principal is not None else None,
            "auth_method": principal.method if principal is not None else None,
            "client_ip": exchange.client_ip or request.remote,
            "error": error.code if error is not None else None,
            "reason": error.reason if error is not None else None,
        }
    )
