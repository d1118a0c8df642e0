"""Routes for the gateway's own endpoints (OAuth, management, dashboard), served by
aiohttp.

Each path gets one handler that dispatches on method. aiohttp's router would
otherwise let a wrong method fall through to the proxy's catch-all route; here
it is a JSON 405 with ``Allow``. The handler also labels the request for
metrics and the access log with a bounded name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from aiohttp import HttpVersion11, web

from gateway.errors import ExpectationFailed, MethodNotAllowed
from gateway.exchange import new_request_id
from gateway.web.middleware import EXCHANGE, render

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def wants_continue(request: web.BaseRequest) -> bool:
    return (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    )


async def send_continue(request: web.BaseRequest) -> None:
    if wants_continue(request):
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the real response has not started


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` (RFC 9110 §10.1.1): continue at once; anything else is
    a JSON 417."""
    if request.version == HttpVersion11 and not wants_continue(request):
        response = render(ExpectationFailed(), new_request_id())
        response.force_close()
        return response
    await send_continue(request)
    return None


View = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def bound(
    key: web.AppKey[T], call: Callable[[T, web.Request], Awaitable[web.StreamResponse]]
) -> View:
    """A view that calls ``call`` with what the app holds under ``key`` (made at start-up,
    after the routes)."""

    async def view(request: web.Request) -> web.StreamResponse:
        return await call(request.app[key], request)

    return view


def by_method(label: str, table: Mapping[str, View]) -> View:
    allowed = tuple(sorted(table))

    async def handler(request: web.Request) -> web.StreamResponse:
        request[EXCHANGE].endpoint = label
        view = table.get(request.method)
        if view is None:
            raise MethodNotAllowed(request.method, allowed)
        return await view(request)

    return handler


def add_endpoint(app: web.Application, path: str, label: str, table: Mapping[str, View]) -> None:
    app.router.add_route("*", path, by_method(label, table), expect_handler=expect_continue)
