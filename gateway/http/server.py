"""The public listener's server: every connection is the proxy engine's
(``gateway.http.connection``), from accept to close. A request for the gateway's own
endpoints is lent to aiohttp's server, which serves the app's routes: aiohttp's
protocol gets a ``Lent`` transport, is fed exactly that request's bytes, and
writes its answer through it; once the answer is complete the engine goes on
with the next request on the connection.

aiohttp answers bytes its parser refuses in text/plain, echoing them back. The
handler made here answers them in the gateway's documented JSON format instead
and echoes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httptools
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.errors import (
    GatewayError,
    HeadTooLarge,
    InternalError,
    MalformedRequest,
    PayloadTooLarge,
    RequestTimeout,
)
from gateway.exchange import new_request_id
from gateway.http.connection import Connection
from gateway.http.engine import ENGINE, Engine
from gateway.web.middleware import render

# What aiohttp's parser refuses, as the error tree's classes (by aiohttp's status).
PARSER_ERRORS: dict[int, type[GatewayError]] = {
    400: MalformedRequest,
    413: PayloadTooLarge,
    431: HeadTooLarge,
}
HANDLER_ARGS: dict[str, Any] = {"max_field_size": 16384, "access_log": None}


def claimed_segments(paths: list[str]) -> frozenset[str]:
    """The first path segment of each of the gateway's own endpoints."""
    return frozenset(p.lstrip("/").split("/", 1)[0] for p in paths)


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
        request_id = new_request_id()
        kind = PARSER_ERRORS.get(status)
        error = kind() if kind is not None else InternalError(request_id)
        if status == 504:
            error = RequestTimeout()
        response = render(error, request_id)
        response.force_close()
        return response


class ProxyServer:
    """The protocol factory of the public listener, with the shutdown aiohttp's runner
    asks of a server (``pre_shutdown``, ``shutdown``)."""

    def __init__(self, engine: Engine, app_server: web.Server) -> None:
        self.engine = engine
        self.app_server = app_server  # serves the requests lent to it
        # Oldest first (dicts keep their order): who gives way when the cap is reached.
        self.connections: dict[Connection, None] = {}

    def __call__(self) -> Connection:
        return Connection(self.engine, self)

    def admit(self, conn: Connection) -> bool:
        """Count a new connection in; at ``proxy.max_connections`` the longest-held
        connection with no request in service (idle, or still sending its head) is closed
        to make room, so slow or silent clients cannot lock out well-behaved ones. False
        when every connection is busy: the new one is turned away."""
        if len(self.connections) >= self.engine.max_connections:
            idle = next((c for c in self.connections if not c.serving), None)
            if idle is None:
                return False
            self.connections.pop(idle, None)
            idle.hang_up()
        self.connections[conn] = None
        return True

    def lend(self, conn: Connection) -> Lent:
        """An aiohttp protocol for the connection's requests to the gateway's own
        endpoints, on a ``Lent`` transport."""
        handler = JsonErrorHandler(self.app_server, loop=asyncio.get_running_loop(),
                                   **HANDLER_ARGS)  # fmt: skip
        lent = Lent(conn, handler)
        handler.connection_made(lent)
        return lent

    def pre_shutdown(self) -> None:
        for conn in list(self.connections):
            conn.close()
        self.app_server.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        await asyncio.gather(
            *(conn.shutdown(timeout) for conn in list(self.connections)),
            self.app_server.shutdown(timeout),
        )
        self.connections.clear()


class Lent(asyncio.Transport):
    """The transport aiohttp's protocol writes through: the client's connection, and a
    response parser that tells the engine when aiohttp's answer is complete."""

    def __init__(self, conn: Connection, handler: RequestHandler) -> None:
        super().__init__()
        self.conn = conn
        self.handler = handler
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = False
        self.closed = False

    def start(self, head_only: bool) -> None:
        """A request is being fed to aiohttp: watch for its final answer."""
        self.head_only = head_only

    # httptools callbacks (an answer's own framing says where it ends)
    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() >= 200 and self.head_only:
            self.conn.lent_answered()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200 and not self.head_only:
            self.conn.lent_answered()

    # asyncio.Transport, as aiohttp uses it
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.conn.send(bytes(data))
        try:
            self.parser.feed_data(bytes(data))
        except httptools.HttpParserError:
            self.conn.hang_up()  # not an answer we can follow: nothing more on this line

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed or self.conn.lost

    def close(self) -> None:
        """aiohttp is done with the connection: in the middle of an answer (an error, a
        forced close) the connection ends; between answers only aiohttp's part does."""
        if not self.closed:
            self.closed = True
            self.conn.lent_closed(self)

    def abort(self) -> None:
        self.closed = True
        self.conn.hang_up()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self.conn.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def get_write_buffer_size(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None  # the engine feeds aiohttp no more than one request's bytes

    def resume_reading(self) -> None:
        return None

    def is_reading(self) -> bool:
        return True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("a lent transport stays with its aiohttp protocol")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.handler


class GatewayRunner(web.AppRunner):
    """An AppRunner whose listener is the proxy engine's, for an app that has one
    (``ENGINE``, set as the public app starts); the admin app is served by aiohttp
    alone."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's start-up
        if ENGINE not in self.app:
            return server
        return cast(web.Server, ProxyServer(self.app[ENGINE], server))
