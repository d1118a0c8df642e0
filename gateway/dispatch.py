"""Routes for the gateway's own endpoints (OAuth, management, dashboard).

Each path gets one handler that dispatches on method. aiohttp's router would
otherwise let a wrong method fall through to the proxy's catch-all route; here
it is a JSON 405 with ``Allow``. The handler also labels the request for
metrics and the access log with a bounded name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from gateway.errors import MethodNotAllowed
from gateway.expect import expect_now
from gateway.middleware import EXCHANGE

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    app.router.add_route("*", path, by_method(label, table), expect_handler=expect_now)
