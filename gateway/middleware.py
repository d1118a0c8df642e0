"""The one middleware around every public request: request id, error
rendering, metrics and the access log."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import HTTP_STATUS_ERRORS, GatewayError, InternalError
from gateway.logs import log_request
from gateway.metrics import Metrics, method_label, status_class

log = logging.getLogger("gateway")
NO_ROUTE: Final = "-"


def new_request_id() -> str:
    return os.urandom(12).hex()


def render(error: GatewayError, request_id: str) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers())
    response.headers["X-Request-Id"] = request_id
    response.headers["Cache-Control"] = "no-store"
    return response


def from_http_exception(exc: web.HTTPException) -> GatewayError:
    kind = HTTP_STATUS_ERRORS.get(exc.status)
    if kind is not None:
        return kind()
    error = GatewayError(exc.reason)
    error.status, error.code = exc.status, exc.reason.lower().replace(" ", "_")
    return error


def observe(metrics: Metrics) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        request_id = new_request_id()
        request["request_id"] = request_id
        error: GatewayError | None = None
        metrics.in_flight.inc()
        try:
            response = await handler(request)
        except GatewayError as exc:
            error = exc
        except web.HTTPException as exc:
            error = from_http_exception(exc)
        except Exception:
            log.exception("unhandled error (request id %s)", request_id)
            error = InternalError(request_id)
        finally:
            metrics.in_flight.dec()
        if error is not None:
            response = render(error, request_id)
        finished = loop.time()
        route = request.get("route")
        route_name = route.name if route is not None else NO_ROUTE
        principal = request.get("principal")
        status = 499 if request.get("aborted") else response.status
        metrics.requests.labels(
            route_name,
            method_label(request.method),
            status_class(status),
            principal.method if principal is not None else "none",
        ).inc()
        if error is not None and error.status in (401, 403):
            metrics.auth_failures.labels(error.reason).inc()
        upstream = request.get("upstream_seconds", 0.0)
        prepared = request.get("prepared_at", finished)
        metrics.overhead.labels(route_name).observe(max(prepared - started - upstream, 0.0))
        log_request(request, status, finished - started, error.reason if error else None)
        return response

    return middleware
