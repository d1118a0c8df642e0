"""The one middleware around every public request: request id, error
rendering, metrics and the access log."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from gateway.errors import HTTP_STATUS_ERRORS, GatewayError, InternalError, MethodNotAllowed
from gateway.exchange import Exchange
from gateway.logs import AccessLog
from gateway.metrics import Metrics, method_label, status_class
from gateway.pipeline.headers import ForwardedFor
from gateway.usage import UsageBook

log = logging.getLogger("gateway")
NO_ROUTE: Final = "-"
EXCHANGE: Final = web.RequestKey("exchange", Exchange)  # what the pipeline learned
CLIENT_CLOSED: Final = 499  # nginx's convention for a connection cut mid-response


class RequestIds:
    """Unique ids without a system call per request: a random per-process prefix and a
    counter. (They identify requests; they are not secrets.)"""

    def __init__(self) -> None:
        self.prefix = ""
        self.counter = itertools.count()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = ""

    def __call__(self) -> str:
        if not self.prefix:
            self.prefix = os.urandom(6).hex()
        return f"{self.prefix}{next(self.counter):012x}"


new_request_id = RequestIds()


def client_address(forwarded_for: ForwardedFor, request: web.BaseRequest) -> str:
    """The client's address: the peer, or from X-Forwarded-For behind a trusted proxy."""
    return forwarded_for.resolve(request.remote or "", request.scheme, request.headers)[0]


def error_parts(error: GatewayError, request_id: str) -> tuple[list[tuple[str, str]], bytes]:
    """The fields and JSON body of an error answer: the one wire format of both lanes."""
    headers = [
        *error.headers().items(),
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-Request-Id", request_id),
        ("Cache-Control", "no-store"),
    ]
    return headers, json.dumps(error.body()).encode()


def render(error: GatewayError, request_id: str) -> web.Response:
    headers, body = error_parts(error, request_id)
    return web.Response(status=error.status, headers=CIMultiDict(headers), body=body)


def from_http_exception(exc: web.HTTPException) -> GatewayError:
    """aiohttp raised an HTTP error of its own (body limits, ...): answer in our format."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(exc.method, tuple(sorted(exc.allowed_methods)))
    kind = HTTP_STATUS_ERRORS.get(exc.status)
    if kind is not None:
        return kind()
    error = GatewayError(exc.reason)
    error.status, error.code = exc.status, exc.reason.lower().replace(" ", "_")
    return error


def observe(metrics: Metrics, usage: UsageBook, access_log: AccessLog) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = Exchange(request_id=new_request_id(), started=time.perf_counter())
        request[EXCHANGE] = exchange
        error: GatewayError | None = None
        metrics.active += 1
        try:
            response = await handler(request)
        except GatewayError as exc:
            error = exc
        except web.HTTPException as exc:
            error = from_http_exception(exc)
        except Exception:
            log.exception("unhandled error (request id %s)", exchange.request_id)
            error = InternalError(exchange.request_id)
        finally:
            metrics.active -= 1
        if error is not None:
            response = render(error, exchange.request_id)
            if "Expect" in request.headers:
                # The client may be holding its body back for a 100 we never sent.
                response.force_close()
        finish(metrics, usage, access_log, request.method, request.rel_url.raw_path,
               request.remote, exchange, response.status, error)  # fmt: skip
        return response

    return middleware


def finish(
    metrics: Metrics,
    usage: UsageBook,
    access_log: AccessLog,
    method: str,
    path: str,
    remote: str | None,
    exchange: Exchange,
    status: int,
    error: GatewayError | None,
) -> None:
    """Account for one answered request: metrics, usage and the access log."""
    finished = time.perf_counter()
    if exchange.aborted:
        status = CLIENT_CLOSED
    record(metrics, usage, method, exchange, status, error, finished)
    access_log.write(method, path, remote, exchange, status, finished - exchange.started, error)


def record(
    metrics: Metrics,
    usage: UsageBook,
    method: str,
    exchange: Exchange,
    status: int,
    error: GatewayError | None,
    finished: float,
) -> None:
    route = exchange.route.name if exchange.route is not None else exchange.endpoint or NO_ROUTE
    principal = exchange.principal
    metrics.count_request(
        route,
        method_label(method),
        status_class(status),
        principal.method if principal is not None else "none",
    )
    if error is not None and error.status in (401, 403):
        metrics.auth_failures.inc(error.reason)
    upstream = exchange.upstream_seconds or 0.0
    prepared = exchange.prepared_at or finished
    metrics.observe_overhead(route, max(prepared - exchange.started - upstream, 0.0))
    if principal is not None:
        usage.decided(
            org_id=principal.org_id,
            credential_id=principal.credential_id,
            route=route,
            status=status,
            client_ip=exchange.client_ip or "",
            now=time.time(),
            paid=exchange.paid,
            failure=(exchange.request_id, method, error.reason) if error is not None else None,
        )
