"""The public listener's connections: a fast lane for plain proxied calls, aiohttp
for everything else.

The profile of the request path put most of the remaining time in aiohttp's
server side (request and response objects, middleware dispatch, the stream
writer). Every connection therefore starts here, as a small asyncio protocol
that frames requests itself and parses each head with llhttp (httptools). A
request takes the fast lane when it is a plain proxied call:

- HTTP/1.1; GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS;
- no Transfer-Encoding, Expect or Upgrade; no repeated field that must be
  single (Host, Content-Length, ...); a head within 8 KiB and 100 fields;
- a body of at most 64 KiB announced by Content-Length;
- a path that normalizes cleanly and that none of the gateway's own endpoints
  (OAuth, management, dashboard) could claim, on a route that is not metered.

Refusals (404, 405, 401, 403, 413, 429, ...) are answered in the fast lane with
the same JSON bodies the middleware renders.

Otherwise, and whenever anything is unusual, the connection is handed to
aiohttp: the bytes the client sent, unchanged, from the first byte of that
request, and every later byte. aiohttp then judges the request from scratch
with the full pipeline (``Pipeline.authorize`` counts nothing, so judging twice
changes nothing); a handed-over connection stays with aiohttp. Rate
limits, quotas and the upstream call happen only once a lane has taken the
request, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError, InternalError, PayloadTooLarge
from gateway.exchange import Exchange
from gateway.http1 import MAX_HEAD, Headers, RequestHead, read_head, response_head
from gateway.logs import AccessLog
from gateway.metrics import Metrics
from gateway.middleware import error_parts, finish, new_request_id
from gateway.pipeline import Admission, Pipeline
from gateway.pipeline.inline import InlineRelay, give_back, lease
from gateway.pipeline.paths import NormalPath, normalize
from gateway.usage import UsageBook

if TYPE_CHECKING:
    from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("gateway.front")

READ_AHEAD: Final = 256 * 1024  # bytes buffered behind a request in service before pausing
KEEPALIVE: Final = 75.0  # seconds an idle connection is kept (aiohttp's default)


class FrontAnswer:
    """An upstream's answer written straight to the client's transport
    (``gateway.pipeline.proxy.Answer``), with the framing aiohttp would give it."""

    def __init__(self, front: FrontProtocol, method: str, exchange: Exchange) -> None:
        self.front = front
        self.method = method
        self.exchange = exchange
        self.status = 0
        self.chunked = False
        self.bodiless = False

    def _head(self, status: int, reason: str, headers: Headers, length: int | None) -> bytes:
        self.status = status
        head = response_head(
            self.method, status, reason, headers, length, not self.front.keep_alive
        )
        self.bodiless, self.chunked = head.bodiless, head.chunked
        return head.data

    def whole(self, status: int, reason: str, headers: Headers, body: bytes) -> None:
        head = self._head(status, reason, headers, len(body))
        self.front.send(head if self.bodiless else head + body)

    async def start(self, status: int, reason: str, headers: Headers) -> None:
        if self.front.lost:
            raise ConnectionResetError("the client is gone")
        self.front.send(self._head(status, reason, headers, None))

    async def write(self, chunk: bytes) -> None:
        if self.front.lost:
            raise ConnectionResetError("the client is gone")
        if self.bodiless or not chunk:
            return
        if self.chunked:
            self.front.send(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.front.send(chunk)
        await self.front.drain()

    async def end(self) -> None:
        if self.chunked and not self.front.lost:
            self.front.send(b"0\r\n\r\n")

    def abort(self) -> None:
        self.exchange.aborted = True
        self.front.keep_alive = False
        self.front.close_now()


def error_answer(answer: FrontAnswer, error: GatewayError, request_id: str) -> None:
    """The middleware's error answer (``gateway.middleware.error_parts``), written by the
    fast lane."""
    headers, body = error_parts(error, request_id)
    answer.whole(error.status, "", headers, body)


class Lane:
    """What the fast lane needs from the public app, and which paths it leaves alone."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        usage: UsageBook,
        access_log: AccessLog,
        claimed: frozenset[str],
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.usage = usage
        self.access_log = access_log
        self.claimed = claimed  # first path segments of the gateway's own endpoints

    def takes(self, path: NormalPath) -> bool:
        first = path.segments[0] if path.segments else ""
        return first not in self.claimed


class FrontProtocol(asyncio.Protocol):
    """One client connection, in the fast lane until a request needs aiohttp."""

    def __init__(
        self,
        lane: Lane,
        hand_to: Callable[[], RequestHandler],
        connections: dict[Any, asyncio.Transport],
    ) -> None:
        self.lane = lane
        self.hand_to = hand_to  # aiohttp's protocol for this listener
        self.connections = connections  # the aiohttp server's, so its shutdown sees us
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.scheme = "http"
        self.buffer = bytearray()
        # The request in service: in a task, or relayed inline (``relaying``).
        self.task: asyncio.Task[None] | None = None
        self.relaying: Call | None = None
        self.relay_done = self._relay_done  # bound once: no method object per request
        self.settled: asyncio.Future[None] | None = None  # made by shutdown() to wait on
        self.advancing = False
        self.keep_alive = True
        self.closing = False
        self.lost = False
        self.eof = False
        self.handed_over = False
        self.reading_paused = False
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.active = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None

    # --- asyncio ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, (list, tuple)) and peer else ""
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.idle_timer = self.loop.call_later(KEEPALIVE, self._check_idle)
        self.connections[self] = self.transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.active = self.loop.time()
        if not self.serving:
            self._advance()
        elif len(self.buffer) > READ_AHEAD and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.eof = True
        if not self.serving:
            self._advance()
        return True  # keep writing the answers to what was sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.keep_alive = False
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.connections.pop(self, None)
        self._wake_writer(ConnectionResetError("the client is gone"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer(None)

    # --- aiohttp's server calls these at shutdown (see JsonErrorServer) ---

    def close(self) -> None:
        """Stop after the request in service."""
        self.closing = True
        if not self.serving:
            self.close_now()

    async def shutdown(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for the request in service (however many tasks it
        takes: a store lookup, then the upstream call), then close."""
        self.closing = True
        if self.serving:
            self.settled = self.loop.create_future()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.settled, timeout)
            if self.task is not None:
                self.task.cancel()
        self.close_now()

    @property
    def serving(self) -> bool:
        return self.task is not None or self.relaying is not None

    def _settle(self) -> None:
        """No request in service any more: tell shutdown()."""
        if self.settled is not None and not self.settled.done():
            self.settled.set_result(None)

    # --- writing ---

    def send(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("the client is gone")
        if self.writing_paused:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    def _wake_writer(self, error: BaseException | None) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def close_now(self) -> None:
        if self.transport is not None and not self.handed_over:
            self.transport.close()

    # --- requests ---

    def _advance(self) -> None:
        """Start the complete requests in the buffer, one after another while each is
        answered at once (refusals), until one is in flight."""
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
        if self.lost or self.handed_over:
            return False
        if self.closing or not self.keep_alive:
            self.close_now()
            return False
        if self.reading_paused and len(self.buffer) <= READ_AHEAD:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(self.buffer) > MAX_HEAD or (self.eof and self.buffer):
                self._hand_over()
            elif self.eof:
                self.close_now()
            return False
        head = read_head(bytes(self.buffer[: end + 4]))
        if head is None:
            self._hand_over()
            return False
        size = end + 4 + head.length
        if len(self.buffer) < size:
            if self.eof:
                self._hand_over()  # a body cut short: aiohttp says what it says
            return False  # the rest of a small body is on its way
        body = bytes(self.buffer[end + 4 : size]) if head.length else None
        self._start(Call(head, size, body))
        return not self.serving and not self.handed_over

    def _hand_over(self) -> None:
        """Give the connection, from the first byte of the pending request, to aiohttp."""
        assert self.transport is not None
        self.task = None
        self._settle()
        if self.lost:
            return  # a client gone while its credential was looked up: nobody to hand
        self.handed_over = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.connections.pop(self, None)
        handler: RequestHandler = self.hand_to()
        if self.reading_paused:
            self.transport.resume_reading()
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        if self.writing_paused:
            handler.pause_writing()
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            handler.data_received(data)
        if self.eof or self.closing:
            handler.close()

    def _start(self, call: Call) -> None:
        """Judge a request without waiting where its credential is cached; otherwise in a
        task that asks the store. Leaves ``serving`` true while it is in flight."""
        lane = self.lane
        try:
            path = normalize(call.head.target)
        except GatewayError:
            self._hand_over()  # aiohttp's router sees such paths differently: let it route
            return
        if not lane.takes(path):
            self._hand_over()
            return
        call.exchange = Exchange(request_id=new_request_id(), started=time.perf_counter())
        try:
            admission = lane.pipeline.authorize_now(
                call.head.method, path, call.headers, self.peer, self.scheme, call.exchange
            )
        except Exception as exc:
            self._admitted(call, None, exc)
            return
        if admission is None:
            self.task = self.loop.create_task(self._authorize(call, path))
        else:
            self._admitted(call, admission, None)

    async def _authorize(self, call: Call, path: NormalPath) -> None:
        """A credential that is not cached: the store is asked."""
        assert call.exchange is not None
        admission: Admission | None = None
        error: Exception | None = None
        try:
            admission = await self.lane.pipeline.authorize(
                call.head.method, path, call.headers, self.peer, self.scheme, call.exchange
            )
        except Exception as exc:
            error = exc
        self.task = None
        self._admitted(call, admission, error)

    def _admitted(self, call: Call, admission: Admission | None, error: Exception | None) -> None:
        """Refuse the judged request, or count it and send it on."""
        if admission is not None and admission.route.cost is not None:
            self._hand_over()  # metered: the wallet's path is aiohttp's
            return
        head, exchange = call.head, call.exchange
        assert exchange is not None
        del self.buffer[: call.size]
        self.keep_alive = head.keep_alive and not self.closing
        call.answer = FrontAnswer(self, head.method, exchange)
        if admission is None:
            self._answered(call, as_gateway_error(error, exchange))
            return
        pipeline = self.lane.pipeline
        forwarder = pipeline.forwarder
        limit = forwarder.body_limit(admission.route)
        if limit is not None and head.length > limit:
            self._answered(call, PayloadTooLarge())
            return
        self.lane.metrics.active += 1
        conn = lease(forwarder, admission.route)
        if conn is None:  # no idle connection: one is awaited
            self.task = self.loop.create_task(self._forward(call, admission))
            return
        try:
            injected = pipeline.count_now(admission)
        except Exception as exc:
            give_back(forwarder, admission.route, conn)
            self._relayed(call, as_gateway_error(exc, exchange))
            return
        if injected is None:  # the limits are counted in Redis: awaited
            give_back(forwarder, admission.route, conn)
            self.task = self.loop.create_task(self._forward(call, admission))
            return
        _, _, head_bytes = forwarder.prepare(
            head.method, admission.route, admission.path, call.headers, injected, False
        )
        self.relaying = call
        InlineRelay(forwarder, admission.route, conn, head.method, head_bytes, call.body,
                    exchange, call.answer, self.relay_done).send()  # fmt: skip

    async def _forward(self, call: Call, admission: Admission) -> None:
        """Count and relay with waiting: limits in Redis, or no idle upstream connection."""
        assert call.exchange is not None and call.answer is not None
        pipeline = self.lane.pipeline
        error: GatewayError | None = None
        try:
            injected = await pipeline.count(admission)
            await pipeline.forwarder.relay(
                call.head.method, admission.route, admission.path, call.headers, injected,
                call.body, False, call.exchange, call.answer,
            )  # fmt: skip
        except Exception as exc:
            error = as_gateway_error(exc, call.exchange)
        self._relayed(call, error)

    def _relay_done(self, error: GatewayError | None) -> None:
        call, self.relaying = self.relaying, None
        assert call is not None
        self._relayed(call, error)

    def _relayed(self, call: Call, error: GatewayError | None) -> None:
        self.lane.metrics.active -= 1
        self._answered(call, error)

    def _answered(self, call: Call, error: GatewayError | None) -> None:
        """Account for the request, then start the next one."""
        answer, exchange = call.answer, call.exchange
        assert answer is not None and exchange is not None
        if error is not None and not exchange.aborted:
            error_answer(answer, error, exchange.request_id)
        status = error.status if error is not None else answer.status
        lane = self.lane
        finish(lane.metrics, lane.usage, lane.access_log, call.head.method,
               logged_path(call.head.target), self.peer, exchange, status, error)  # fmt: skip
        self.task = None
        self._settle()
        self.active = self.loop.time()
        self._advance()

    def _check_idle(self) -> None:
        """Close a connection idle for KEEPALIVE seconds (as aiohttp does)."""
        if self.lost or self.handed_over:
            return
        idle = self.loop.time() - self.active
        if not self.serving and idle >= KEEPALIVE:
            self.close_now()
            return
        self.idle_timer = self.loop.call_later(max(KEEPALIVE - idle, 1.0), self._check_idle)


class Call:
    """One request in the fast lane, from its framing to its answer."""

    __slots__ = ("answer", "body", "exchange", "head", "headers", "size")

    def __init__(self, head: RequestHead, size: int, body: bytes | None) -> None:
        self.head = head
        self.size = size  # bytes of the buffer it takes, head and body
        self.body = body
        self.headers = CIMultiDict(head.headers)
        self.exchange: Exchange | None = None
        self.answer: FrontAnswer | None = None


def as_gateway_error(exc: Exception | None, exchange: Exchange) -> GatewayError:
    """What the client is told about an exception from the pipeline."""
    if isinstance(exc, GatewayError):
        return exc
    log.error("unhandled error (request id %s)", exchange.request_id, exc_info=exc)
    return InternalError(exchange.request_id)


def logged_path(target: str) -> str:
    """The path as the access log shows it: no query, no scheme or authority."""
    path = target.partition("?")[0]
    if not path.startswith("/"):  # absolute-form (RFC 9112 §3.2.2)
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    return path


def own_first_segments(app: web.Application, catch_all: object) -> frozenset[str] | None:
    """The first path segment of each of the app's own endpoints; None if one of them
    has a variable first segment (then every request is aiohttp's to route)."""
    claimed = set()
    for resource in app.router.resources():
        if any(route.handler is catch_all for route in resource):
            continue
        first = resource.canonical.lstrip("/").split("/", 1)[0]
        if "{" in first:
            return None
        claimed.add(first)
    return frozenset(claimed)
