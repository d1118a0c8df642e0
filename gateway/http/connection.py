"""A client connection of the public listener, owned from accept to close.

One ``Connection`` owns each, as uvicorn's and h11's protocols do: it frames
requests (``framing``), runs each proxied one as a ``Call`` (``call``), streams
bodies both ways with back-pressure, and closes on EOF, on error and on timeout.
Requests for the gateway's own endpoints are lent, one at a time, to aiohttp's
server (``server``); the connection stays the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final, cast

from gateway.errors import GatewayError, RequestTimeout, UpgradeRefused, error_parts
from gateway.exchange import new_request_id
from gateway.http.call import Call
from gateway.http.engine import Engine
from gateway.http.framing import BodyFraming, head_end, response_head
from gateway.http.heads import RequestHead, scan_request
from gateway.http.streams import RequestBody
from gateway.http.tunnel import GOING_AWAY, Tunnel
from gateway.pipeline.paths import NormalPath, normalize
from gateway.pipeline.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from gateway.http.server import Lent, ProxyServer


READ_AHEAD: Final = 256 * 1024  # bytes buffered from a client before it is paused
SMALL_BODY: Final = 64 * 1024  # bodies up to this size (Content-Length) are read whole first
KEEPALIVE: Final = 75.0  # seconds an idle connection is kept (aiohttp's default)
LINGER: Final = 2.0  # seconds to read and drop a refused body before closing


class Connection(asyncio.Protocol):
    """One client connection, owned from accept to close."""

    def __init__(self, engine: Engine, server: ProxyServer) -> None:
        self.engine = engine
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.scheme = "http"
        self.buffer = bytearray()
        self.call: Call | None = None  # the request in service
        self.aiohttp: Lent | None = None  # aiohttp's protocol, for the own endpoints
        self.tunnel: Tunnel | None = None  # a WebSocket: the connection is its from the 101
        self.lent_body: BodyFraming | None = None  # the request aiohttp is serving, if any
        self.settled: asyncio.Future[None] | None = None  # made by shutdown() to wait on
        self.waiter: asyncio.Future[None] | None = None  # a body reader waiting for bytes
        self.advancing = False
        self.keep_alive = True
        self.closing = False
        self.lingering = False
        self.lost = False
        self.eof = False
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.active = self.loop.time()
        self.head_started: float | None = None  # when the head now awaited began to arrive
        self.timer: asyncio.TimerHandle | None = None

    @property
    def serving(self) -> bool:
        return self.call is not None or self.lent_body is not None or self.tunnel is not None

    # --- asyncio ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, (list, tuple)) and peer else ""
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.timer = self.loop.call_later(KEEPALIVE, self._check_time)
        if not self.server.admit(self):
            self.hang_up()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # a refused body, read and dropped until the close
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        self.buffer += data
        self.active = self.loop.time()
        if not self.serving:
            self._advance()
            return
        if self.lent_body is not None:
            self._feed_app()
        wake(self.waiter)
        if len(self.buffer) > READ_AHEAD and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.eof = True
        if self.lingering or self.tunnel is not None:
            self.hang_up()
            return False
        wake(self.waiter)
        if not self.serving:
            self._advance()
        return True  # half-close: the answers to what was sent are still written

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.keep_alive = False
        if self.timer is not None:
            self.timer.cancel()
        self.server.connections.pop(self, None)
        gone = ConnectionResetError("the client is gone")
        wake(self.waiter, gone)
        wake(self.drain_waiter, gone)
        lent, self.aiohttp = self.aiohttp, None
        if lent is not None:
            lent.closed = True
            lent.handler.connection_lost(exc)
        if self.tunnel is not None:
            self.tunnel.finish()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.aiohttp is not None:
            self.aiohttp.handler.pause_writing()
        if self.tunnel is not None:
            self.tunnel.client_paused(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.aiohttp is not None:
            self.aiohttp.handler.resume_writing()
        if self.tunnel is not None:
            self.tunnel.client_paused(False)
        wake(self.drain_waiter)

    # --- the server's shutdown ---

    def close(self) -> None:
        """Stop after the request in service; a WebSocket is told the gateway goes away."""
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.end(GOING_AWAY, "the gateway is shutting down")
        elif not self.serving:
            self.hang_up()

    async def shutdown(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for the request in service, then close."""
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.end(GOING_AWAY, "the gateway is shutting down")
        elif self.serving:
            self.settled = self.loop.create_future()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.settled, timeout)
            if self.call is not None:
                self.call.cancel()
        self.hang_up()

    # --- reading and writing ---

    def send(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("the client is gone")
        if self.writing_paused:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    async def more(self) -> None:
        """Wait for more bytes from the client (or its EOF)."""
        self.waiter = self.loop.create_future()
        await self.waiter

    def consumed(self) -> None:
        """A body reader took bytes from the buffer: read on if it was paused."""
        if self.reading_paused and len(self.buffer) <= READ_AHEAD and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- requests ---

    def _advance(self) -> None:
        """Start the requests in the buffer, one after another while each is answered at
        once (refusals), until one is in service."""
        if self.advancing:
            return  # an answer given while starting a request: the loop below goes on
        self.advancing = True
        try:
            while not self.serving and self._next():
                pass
        finally:
            self.advancing = False

    def _next(self) -> bool:
        """Start the next request in the buffer; True if it was answered already."""
        if self.lost:
            return False
        if self.closing or not self.keep_alive:
            self.hang_up()
            return False
        self.consumed()
        try:
            end = head_end(self.buffer)
            if end < 0:
                if self.eof:
                    self.hang_up()  # a head cut short (or none): nothing to answer
                elif self.buffer and self.head_started is None:
                    self._head_begun()
                return False
            head = scan_request(bytes(self.buffer[:end]))
        except GatewayError as exc:
            self._refuse(exc)
            return False
        small = not head.chunked and head.expect is None and head.length <= SMALL_BODY
        if small and len(self.buffer) < end + head.length:
            if self.eof:
                self.hang_up()  # a body cut short
            return False  # the rest of a small body is on its way
        try:
            path: NormalPath | None = normalize(head.target)
            refusal = None
        except GatewayError as exc:
            path, refusal = None, exc
        self.head_started = None
        decisions = self.engine.deciding(path)
        if decisions is None and self.engine.own(head.target, path):
            if head.upgrade is not None:
                self._refuse(UpgradeRefused())  # the gateway's own endpoints speak HTTP only
                return False
            self._lend(bytes(self.buffer[:end]), head)
            return False
        del self.buffer[:end]
        body: bytes | RequestBody | None = None
        if not small:
            body = RequestBody(self, BodyFraming(head), None)
        elif head.length:
            body = bytes(self.buffer[: head.length])
            del self.buffer[: head.length]
        # An upgrade not switched ends the connection: what the client sent after its
        # handshake is the other protocol's, never a request to read.
        self.keep_alive = head.keep_alive and not self.closing and head.upgrade is None
        self.call = Call(self, head, body, decisions)
        self.call.start(path, refusal)
        return self.call is None

    def finished(self, call: Call) -> None:
        """The request in service is answered and accounted for: start the next."""
        if call.unread_body or (call.head.expect is not None and not call.continued):
            self.keep_alive = False  # what is left of the body is not a request
        self.call = None
        wake(self.settled)
        if self.tunnel is not None:
            return  # a WebSocket: no more requests on this connection
        self.active = self.loop.time()
        if call.unread_body and not self.lost:
            self._linger()
        else:
            self._advance()

    def open_tunnel(self, upstream: UpstreamProtocol) -> Tunnel:
        """The upstream switched to WebSocket: from now on the connection carries the
        socket's frames (what the client sent after its handshake included)."""
        engine = self.engine
        self.keep_alive = False
        self.tunnel = tunnel = Tunnel(self, upstream, engine.websocket_idle_timeout, self._unwatch)
        engine.metrics.websockets += 1
        early, self.buffer = bytes(self.buffer), bytearray()
        self.consumed()
        if early:
            tunnel.from_client(early)
        return tunnel

    def _unwatch(self, tunnel: Tunnel) -> None:
        self.engine.metrics.websockets -= 1
        self.engine.sockets.forget(tunnel)

    def _refuse(self, error: GatewayError) -> None:
        """Bytes that are not a request we serve: answered in JSON, then closed."""
        self.keep_alive = False
        headers, body = error_parts(error, new_request_id())
        head = response_head(
            "GET", error.status, "", headers, len(body), True, server=self.engine.server
        )
        self.send(head.data + body)
        self.buffer.clear()
        self.hang_up()

    # --- the gateway's own endpoints: lent to aiohttp one request at a time ---

    def _lend(self, head_bytes: bytes, head: RequestHead) -> None:
        del self.buffer[: len(head_bytes)]
        self.keep_alive = head.keep_alive and not self.closing
        if self.aiohttp is None:
            self.aiohttp = self.server.lend(self)
        self.lent_body = BodyFraming(head)
        self.aiohttp.start(head.method == "HEAD")
        self.aiohttp.handler.data_received(head_bytes)
        self._feed_app()

    def _feed_app(self) -> None:
        """The body of the lent request, as it arrives; the bytes after it wait."""
        assert self.aiohttp is not None and self.lent_body is not None
        try:
            data = self.lent_body.take_raw(self.buffer)
        except GatewayError:
            self.hang_up()  # aiohttp has the head; the rest is not a body: end it all
            return
        if data:
            self.aiohttp.handler.data_received(data)
        self.consumed()

    def lent_answered(self) -> None:
        """aiohttp's answer is complete: the next request is the engine's again."""
        body, self.lent_body = self.lent_body, None
        if body is None:
            return
        self.active = self.loop.time()
        wake(self.settled)
        if not body.done:
            self.keep_alive = False  # aiohttp answered without the whole body
            self._linger()
        else:
            self.loop.call_soon(self._advance)  # not from inside aiohttp's write

    def lent_closed(self, lent: Lent) -> None:
        """aiohttp closed its side: mid-answer, the connection ends; between answers,
        only aiohttp's protocol does."""
        if self.aiohttp is lent:
            self.aiohttp = None
        self.loop.call_soon(lent.handler.connection_lost, None)
        if self.lent_body is not None:
            self.lent_body = None
            self.keep_alive = False
            self.hang_up()

    def _linger(self) -> None:
        """A body that was refused unread: half-close, and read and drop what the client
        still sends for a little while, so that it reads our answer rather than a reset."""
        self.lingering = True
        self.buffer.clear()
        self.consumed()
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.hang_up)

    # --- timers ---

    def _head_begun(self) -> None:
        """Part of a head has come: the whole of it must follow within the header timeout,
        however slowly its bytes arrive."""
        self.head_started = now = self.loop.time()
        deadline = now + self.engine.header_timeout
        if self.timer is None or self.timer.when() > deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_time)

    def _check_time(self) -> None:
        """Close a connection idle for KEEPALIVE seconds, and answer 408 to a head that
        has not arrived within ``proxy.header_timeout`` of its first byte."""
        self.timer = None
        if self.lost:
            return
        now = self.loop.time()
        left = KEEPALIVE
        if not self.serving:
            if self.head_started is not None:
                left = self.head_started + self.engine.header_timeout - now
                if left <= 0:
                    self._refuse(RequestTimeout())
                    return
            else:
                left = self.active + KEEPALIVE - now
                if left <= 0:
                    self.hang_up()
                    return
        self.timer = self.loop.call_later(max(left, 0.01), self._check_time)


def wake(waiter: asyncio.Future[None] | None, error: BaseException | None = None) -> None:
    """Resume whoever waits on ``waiter`` (with ``error`` raised there, if given)."""
    if waiter is not None and not waiter.done():
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
