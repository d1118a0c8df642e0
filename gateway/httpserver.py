"""JSON answers even for requests aiohttp's HTTP parser refuses.

Bytes that are not valid HTTP (control characters in a header, a malformed
chunk size, a header line over the limit) never reach a handler or a
middleware: aiohttp answers them itself, in text/plain, echoing the offending
bytes back. This swaps in a request handler that answers in the gateway's
documented JSON format instead and echoes nothing.
"""

from __future__ import annotations

import asyncio
import json
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.app import fast_lane
from gateway.front import FrontProtocol, Lane
from gateway.middleware import new_request_id

PARSER_ERRORS = {
    400: ("bad_request", "The request is not valid HTTP."),
    413: ("payload_too_large", "The request is too large."),
    431: ("bad_request", "The request headers are too large."),
    500: ("internal_error", "Internal error."),
    504: ("gateway_timeout", "The request took too long."),
}


class JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is out already: the connection is all we can end.
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            self.log_exception("error handling request", exc_info=exc)
        else:
            # A client's malformed bytes are its problem, not an incident: no traceback.
            self.logger.debug("refused malformed request from %s: %s", request.remote, exc)
        code, text = PARSER_ERRORS.get(status, ("bad_request", "The request is not valid HTTP."))
        request_id = new_request_id()
        if status == 500:
            text = f"Internal error. Quote request id {request_id} when reporting it."
        response = web.Response(
            status=status,
            text=json.dumps({"error": code, "message": text}),
            content_type="application/json",
            headers={"X-Request-Id": request_id, "Cache-Control": "no-store"},
        )
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    lane: Lane | None = None

    def handler(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if self.lane is None:
            return self.handler()
        return FrontProtocol(self.lane, self.handler, self._connections)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections start in the fast lane (``gateway.front``) and
    answer parser errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same state, one overridden factory method: the narrowest hook aiohttp offers.
        server.__class__ = JsonErrorServer
        cast(JsonErrorServer, server).lane = fast_lane(self.app)
        return server
