"""One upstream call, from the request written to the answer given.

The common proxied request needs nothing to wait for but the upstream's bytes:
its body is at hand, an idle keep-alive connection to its upstream is too, and
the answer is small with a Content-Length. The profile put a third of the time
per request in the task, coroutines and futures that awaiting it took. A
``Relay`` then writes the request and is told, as the upstream connection's
listener, when the answer has arrived; it writes the whole answer and reports
to ``done``: no task.

What has to wait (no idle connection, a body to stream) runs in a task
(``Relay.run``), and so does the rest of a call that turns out to need it: an
answer to stream (no Content-Length, larger than ``SMALL_BODY``, HEAD, 204/304),
and a reused connection found dead before any byte came back (sent once more on
a fresh connection, as ``run`` retries). Both ways are this one class's: the
``Forwarder`` prepares the call and hands it over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import (
    ClientClosedRequest,
    GatewayError,
    InternalError,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.exchange import Exchange
from gateway.pipeline.pool import UpstreamPool
from gateway.pipeline.upstream import (
    Head,
    UpstreamConnectError,
    UpstreamProtocol,
    UpstreamProtocolError,
    send_body,
)
from gateway.wait import Wait, resolved

if TYPE_CHECKING:
    from gateway.http.framing import AnswerFields
    from gateway.pipeline.proxy import Forwarder
    from gateway.pipeline.targets import Target

log = logging.getLogger("gateway.proxy")


class BodyTooLarge(Exception):
    """A request body past the route's limit, found as it streams (413)."""


SMALL_BODY = 64 * 1024  # answers up to this size (with a Content-Length) are relayed whole
Done = Callable[[GatewayError | None], None]  # told once: None, or the error to answer


def whole_length(method: str, head: Head) -> int | None:
    """The length of a body to read whole and send with the headers in one write (fewer
    system calls than streaming it): one known to be small; None to stream it."""
    length = head.content_length
    return length if length is not None and length <= SMALL_BODY and method != "HEAD" else None


class Relay:
    """One upstream call; on an idle connection, its ``upstream.Listener``."""

    __slots__ = (
        "answer",
        "body",
        "chunked",
        "conn",
        "done",
        "exchange",
        "forwarder",
        "head_bytes",
        "head_seen",
        "method",
        "pool",
        "started",
        "target",
        "task",
        "timer",
    )

    def __init__(
        self,
        forwarder: Forwarder,
        target: Target,
        pool: UpstreamPool,
        method: str,
        head_bytes: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
        exchange: Exchange,
        answer: Answer,
        done: Done,
    ) -> None:
        self.forwarder = forwarder
        self.target = target
        self.pool = pool
        self.conn: UpstreamProtocol | None = None
        self.method = method
        self.head_bytes = head_bytes
        self.body = body
        self.chunked = chunked  # the body is sent in the chunked coding
        self.exchange = exchange
        self.answer = answer
        self.done = done  # told once (see ``_end`` and ``_later``)
        self.started = 0.0
        self.head_seen = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only weak ones

    def send(self, conn: UpstreamProtocol) -> None:
        """Write the request (its body at hand) on an idle connection; ``done`` is told
        once the answer went out or failed (perhaps before this returns)."""
        assert self.body is None or isinstance(self.body, bytes)
        self.conn = conn
        conn.start(head_only=self.method == "HEAD", listener=self)
        self.started = time.perf_counter()
        self.timer = conn.loop.call_later(self.target.read_timeout, self._timed_out)
        data = self.head_bytes + self.body if self.body else self.head_bytes
        try:
            conn.write(data)
        except UpstreamProtocolError as exc:  # it closed while idle in the pool
            conn.listener = None
            self.on_failure(conn, exc)

    # --- told by the connection ---

    def on_progress(self, conn: UpstreamProtocol) -> None:
        try:
            self._progress(conn)
        except GatewayError as exc:  # a response field that cannot be passed on
            self._end(exc, reuse=False)
        except UpstreamProtocolError:
            self._end(self.forwarder.failed(self.target, UpstreamError, "protocol"), reuse=False)
        except Exception:
            log.exception("unhandled error (request id %s)", self.exchange.request_id)
            self._end(InternalError(self.exchange.request_id), reuse=False)

    def _progress(self, conn: UpstreamProtocol) -> None:
        head, body = conn.final, conn.body
        assert head is not None and body is not None
        if not self.head_seen:
            self.head_seen = True
            self.forwarder.answered(self.target, self.started, self.exchange)
        length = whole_length(self.method, head)
        if length is None:  # to be streamed: the Forwarder's relay, in a task
            self._stop_timer()
            conn.listener = None
            self._continue(self.relay_answer(conn, head))
            return
        if not body.complete:
            return  # the rest is on its way; the timer still runs
        headers = self.forwarder.answer_headers(head, self.exchange)
        data = body.take_all()  # llhttp has delimited it: exactly ``length`` bytes
        self.exchange.prepared_at = time.perf_counter()
        self.answer.whole(head.status, head.reason, headers, data)
        self._end(None, reuse=True)

    def on_failure(self, conn: UpstreamProtocol, error: UpstreamProtocolError) -> None:
        if conn.reused and not conn.received_any and self.body is None:
            # The upstream closed the idle connection as we sent on it: once more, fresh.
            self._stop_timer()
            self.pool.discard(conn)
            self._continue(self.run(attempts=(2,)))
            return
        self._end(self.forwarder.failed(self.target, UpstreamError, "protocol"), reuse=False)

    def _timed_out(self) -> None:
        self.timer = None
        assert self.conn is not None
        self.conn.listener = None
        self._end(self.forwarder.failed(self.target, UpstreamTimeout, "timeout"), reuse=False)

    # --- what waits: in a task (``later``) ---

    async def run(
        self, leased: Wait[UpstreamProtocol] | None = None, attempts: tuple[int, ...] = (1, 2)
    ) -> None:
        """Send the request, wait for the answer's head, and relay the answer."""
        self.started = time.perf_counter()
        conn, head = await self._sent(leased, attempts)
        self.forwarder.answered(self.target, self.started, self.exchange)
        await self.relay_answer(conn, head)

    async def relay_answer(self, conn: UpstreamProtocol, head: Head) -> None:
        """Relay an answer whose head has arrived, then give the connection back."""
        try:
            await self.stream(conn, head)
        finally:
            self.pool.release(conn)

    async def _sent(
        self, leased: Wait[UpstreamProtocol] | None, attempts: tuple[int, ...]
    ) -> tuple[UpstreamProtocol, Head]:
        """Send the request and wait for the response head (once more on a fresh connection
        if a reused one turns out dead and the request can be sent again)."""
        target, pool, body, failed = self.target, self.pool, self.body, self.forwarder.failed
        for attempt in attempts:
            try:
                waiting = leased if attempt == 1 and leased is not None else None
                conn = await resolved(
                    waiting or pool.acquire(fresh=attempt == 2, timeout=target.read_timeout)
                )
            except UpstreamConnectError:
                raise failed(target, UpstreamError, "connect") from None
            except TimeoutError:  # every connection to this upstream is busy
                raise failed(target, UpstreamTimeout, "pool") from None
            try:
                conn.start(head_only=self.method == "HEAD")
                if isinstance(body, bytes):
                    conn.write(self.head_bytes + body)  # held whole already: one write
                else:
                    conn.write(self.head_bytes)
                    if body is not None:
                        await send_body(conn, body, self.chunked, target.read_timeout)
                return conn, await conn.head(target.read_timeout)
            except BodyTooLarge:
                pool.discard(conn)
                raise PayloadTooLarge() from None
            except ConnectionError:
                # The client went away (or broke its body) mid-upload: not our error.
                pool.discard(conn)
                self.answer.abort()
                raise ClientClosedRequest() from None
            except TimeoutError:
                pool.discard(conn)
                raise failed(target, UpstreamTimeout, "timeout") from None
            except UpstreamProtocolError:
                pool.discard(conn)
                if attempt == 1 and conn.reused and not conn.received_any and body is None:
                    continue
                raise failed(target, UpstreamError, "protocol") from None
            except BaseException:
                pool.discard(conn)
                raise
        raise AssertionError("unreachable")

    async def stream(self, conn: UpstreamProtocol, head: Head) -> None:
        """The answer whose head has arrived, to ``answer``: whole when small, else
        streamed chunk by chunk."""
        assert conn.body is not None
        target, answer, exchange, failed = (
            self.target,
            self.answer,
            self.exchange,
            self.forwarder.failed,
        )
        headers = self.forwarder.answer_headers(head, exchange)
        length = whole_length(self.method, head)
        if length is not None:
            try:
                if conn.body.complete:  # usually: it came in the same packet as the head
                    body = await conn.body.read_all(length)
                else:
                    async with asyncio.timeout(target.read_timeout):
                        body = await conn.body.read_all(length)
            except TimeoutError:
                raise failed(target, UpstreamTimeout, "timeout") from None
            except UpstreamProtocolError:
                raise failed(target, UpstreamError, "protocol") from None
            exchange.prepared_at = time.perf_counter()
            answer.whole(head.status, head.reason, headers, body)
            return
        try:
            # Read the first chunk before committing to a status, so an upstream that
            # fails straight after its headers can still be answered with a 502 or 504.
            async with asyncio.timeout(target.read_timeout):
                first = await conn.body.read()
        except TimeoutError:
            raise failed(target, UpstreamTimeout, "timeout") from None
        except UpstreamProtocolError:
            raise failed(target, UpstreamError, "protocol") from None
        try:
            await answer.start(head.status, head.reason, headers)
        except ConnectionError:
            conn.close()
            answer.abort()
            raise ClientClosedRequest() from None
        exchange.prepared_at = time.perf_counter()
        try:
            chunk = first
            while chunk:
                await answer.write(chunk)
                async with asyncio.timeout(target.read_timeout):
                    chunk = await conn.body.read()
            await answer.end()
        except (TimeoutError, UpstreamProtocolError):
            # Headers are sent; the only honest signal left is a cut connection.
            failed(target, UpstreamError, "truncated")
            conn.close()
            answer.abort()
        except ConnectionError:
            # The client went away; stop reading from the upstream.
            conn.close()
            answer.abort()

    # --- ending ---

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _end(self, error: GatewayError | None, reuse: bool) -> None:
        self._stop_timer()
        assert self.conn is not None
        if reuse:
            self.pool.release(self.conn)
        else:
            self.pool.discard(self.conn)
        done, self.done = self.done, ignore
        done(error)

    def _continue(self, work: Coroutine[Any, Any, None]) -> None:
        self.later(work)

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """The call (or its rest) in a task; ``done`` is told when it ends."""
        self.task = asyncio.get_running_loop().create_task(self._later(work))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """The rest of the call in a task; the connection is the Forwarder's to give back."""
        error: GatewayError | None = None
        try:
            await work
        except GatewayError as exc:
            error = exc
        except asyncio.CancelledError:
            error = UpstreamError(self.target.name, "cancelled")
        except Exception:
            log.exception("unhandled error (request id %s)", self.exchange.request_id)
            error = InternalError(self.exchange.request_id)
        done, self.done = self.done, ignore
        done(error)


def ignore(error: GatewayError | None) -> None:
    return None


class Answer(Protocol):
    """Where an upstream's answer goes: the client's connection (``gateway.http.streams``)."""

    def whole(self, status: int, reason: str, headers: AnswerFields, body: bytes) -> None:
        """The complete answer at once."""

    async def start(self, status: int, reason: str, headers: AnswerFields) -> None:
        """Send the head of a streamed answer; ConnectionError if the client is gone."""

    async def write(self, chunk: bytes) -> None:
        """One piece of the body; waits while the client reads slowly."""

    async def end(self) -> None: ...

    def abort(self) -> None:
        """Cut the client's connection (the answer cannot be completed)."""
