"""The two ends of a proxied request on the client's connection: ``Answer``, where
the upstream's answer is written (``gateway.pipeline.proxy.Answer``), and
``RequestBody``, the request body read from the connection as the upstream
takes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import GatewayError, error_parts
from gateway.exchange import Exchange
from gateway.http.framing import AnswerFields, BodyFraming, Relayed, response_head
from gateway.http.heads import RequestHead
from gateway.pipeline.relay import BodyTooLarge

if TYPE_CHECKING:
    from gateway.http.connection import Connection


class Answer:
    """An answer written to the client's connection (``gateway.pipeline.proxy.Answer``)."""

    __slots__ = ("bodiless", "chunked", "conn", "exchange", "head", "http10", "method", "status")

    def __init__(self, conn: Connection, head: RequestHead, exchange: Exchange) -> None:
        self.conn = conn
        self.head = head
        self.method = head.method
        self.http10 = head.version == "1.0"
        self.exchange = exchange
        self.status = 0  # once the head is out
        self.chunked = False
        self.bodiless = False

    def _head(self, status: int, reason: str, headers: AnswerFields, length: int | None) -> bytes:
        conn = self.conn
        route = self.exchange.route
        if route is not None and route.cors is not None:  # the route's CORS (``cors``)
            origin = self.head.fields.get("Origin")
            cors = route.cors.actual(origin)
            headers = headers.plus(cors) if isinstance(headers, Relayed) else [*headers, *cors]
        head = response_head(self.method, status, reason, headers, length,
                             not conn.keep_alive, self.http10, conn.engine.server)  # fmt: skip
        self.status = status
        self.bodiless, self.chunked = head.bodiless, head.chunked
        if head.close:
            conn.keep_alive = False
        return head.data

    def whole(self, status: int, reason: str, headers: AnswerFields, body: bytes) -> None:
        head = self._head(status, reason, headers, len(body))
        self.conn.send(head if self.bodiless else head + body)

    async def start(self, status: int, reason: str, headers: AnswerFields) -> None:
        if self.conn.lost:
            raise ConnectionResetError("the client is gone")
        self.conn.send(self._head(status, reason, headers, None))

    async def write(self, chunk: bytes) -> None:
        conn = self.conn
        if conn.lost:
            raise ConnectionResetError("the client is gone")
        if self.bodiless or not chunk:
            return
        conn.send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        await conn.drain()

    async def end(self) -> None:
        if self.chunked and not self.conn.lost:
            self.conn.send(b"0\r\n\r\n")

    def switching(self, reason: str, headers: Relayed) -> None:
        """The upstream's 101 to a WebSocket handshake (RFC 9110 §15.2.2)."""
        self.status = 101
        conn = self.conn
        head = response_head(self.method, 101, reason, headers, 0, False, server=conn.engine.server)
        conn.send(head.data)

    def abort(self) -> None:
        self.exchange.aborted = True
        self.conn.keep_alive = False
        self.conn.hang_up()

    def error(self, error: GatewayError) -> None:
        headers, body = error_parts(error, self.exchange.request_id)
        self.whole(error.status, "", headers, body)


class RequestBody:
    """A request body streamed from the connection's buffer: an async iterator of the
    bytes to send upstream, reading on as the upstream takes them."""

    __slots__ = ("conn", "framing", "limit", "seen")

    def __init__(self, conn: Connection, framing: BodyFraming, limit: int | None) -> None:
        self.conn = conn
        self.framing = framing
        self.limit = limit
        self.seen = 0

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        conn = self.conn
        while True:
            data = self.framing.take(conn.buffer)
            conn.consumed()
            if data:
                self.seen += len(data)
                if self.limit is not None and self.seen > self.limit:
                    raise BodyTooLarge
                return data
            if self.framing.done:
                raise StopAsyncIteration
            if conn.lost or conn.eof:
                raise ConnectionResetError("the client closed before its body ended")
            await conn.more()
