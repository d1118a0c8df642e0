"""The one middleware around the gateway's own endpoints (the requests the proxy
engine lends to aiohttp): request id, error rendering, metrics and the access
log, accounted as the engine accounts for proxied requests."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from gateway.errors import (
    BadRequest,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NoRoute,
    PayloadTooLarge,
    error_parts,
)
from gateway.exchange import Exchange, finish, new_request_id
from gateway.logs import AccessLog
from gateway.metering.usage import UsageBook
from gateway.metrics import Metrics
from gateway.pipeline.headers import ForwardedFor

log = logging.getLogger("gateway")
EXCHANGE: Final = web.RequestKey("exchange", Exchange)  # what the pipeline learned


# Status codes aiohttp itself may raise (body limits, malformed requests) mapped
# onto our tree so that even they answer with a documented JSON body.
HTTP_STATUS_ERRORS: dict[int, type[GatewayError]] = {
    400: BadRequest,
    404: NoRoute,
    413: PayloadTooLarge,
}


def client_address(forwarded_for: ForwardedFor, request: web.BaseRequest) -> str:
    """The client's address: the peer, or from X-Forwarded-For behind a trusted proxy."""
    return forwarded_for.resolve(request.remote or "", request.scheme, request.headers)[0]


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


def server_named(name: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """A response signal: aiohttp's answers say ``Server: name`` (``server_header``), not
    aiohttp's and Python's versions."""

    async def name_server(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = name

    return name_server
