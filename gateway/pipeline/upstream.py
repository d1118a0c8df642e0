"""A lean HTTP/1.1 client for upstream calls: asyncio protocols, pooled
keep-alive connections (``gateway.pipeline.pool``), and llhttp (through httptools)
to parse responses.

The profile of the request path put aiohttp's client at about 40% of the time
per request; this client does only what a reverse proxy needs: write the
request head in one call, stream the body (Content-Length or chunked), parse
the response, stream its body back with flow control in both directions, and
reuse the connection when the response allows it.

- 1xx informational responses are skipped; the final response is returned.
- HEAD: llhttp cannot be told that a response carries no body, so a HEAD
  response ends at its headers and its connection is not reused.
- A reused connection that dies before any byte of the response arrives is
  retried once on a fresh connection when the request has no body (the
  upstream closed an idle keep-alive connection at the same moment).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from gateway.errors import GatewayError
from gateway.http.heads import Fields, scan_response

HIGH_WATER = 1 << 20  # bytes buffered from the upstream before it is paused
LOW_WATER = 1 << 18

CHUNKED_END = b"Transfer-Encoding: chunked\r\n\r\n"


class UpstreamConnectError(Exception):
    """The upstream could not be connected to."""


class UpstreamProtocolError(Exception):
    """The upstream answered with something that is not HTTP, or hung up mid-answer."""


@dataclass(slots=True)
class Head:
    status: int
    reason: str
    fields: Fields  # read in place from the response head (``gateway.http.heads``)
    content_length: int | None


class Listener(Protocol):
    """Told of a response's progress from the connection's callbacks, instead of a task
    awaiting ``head()`` (``gateway.pipeline.inline``)."""

    def on_progress(self, conn: UpstreamProtocol) -> None:
        """Bytes arrived and the final response head is known (``conn.final``)."""

    def on_failure(self, conn: UpstreamProtocol, error: UpstreamProtocolError) -> None:
        """The connection broke or the answer is not HTTP."""


class Body:
    """The response body as it arrives; ``read()`` returns b"" at the end."""

    def __init__(self, protocol: UpstreamProtocol) -> None:
        self._protocol = protocol
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._protocol.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def done(self) -> bool:
        return self._eof and not self._chunks

    @property
    def complete(self) -> bool:
        """Everything has arrived (reading it will not wait)."""
        return self._eof or self._error is not None

    async def read(self) -> bytes:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < LOW_WATER:
            self._protocol.resume_reading()
        return data

    def take_all(self) -> bytes:
        """What has arrived, at once (for a body that is ``complete``)."""
        if self._error is not None:
            raise self._error
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._protocol.resume_reading()
        return data

    async def read_all(self, limit: int) -> bytes:
        parts = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError("body larger than announced")
            parts.append(chunk)
        return b"".join(parts)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.reused = False
        self.keep_alive = False
        self.head_only = False
        self._head: asyncio.Future[Head] | None = None
        self.asked = False  # a request was written and its answer is awaited
        self.final: Head | None = None  # the final (non-1xx) response head, once known
        self.listener: Listener | None = None
        self._pending = bytearray()  # what came until the final head did, to scan it
        self._head_at = 0  # where in it the head now parsed begins
        self._bad = False  # a final head the scanner refused
        self._informational = False
        self.body: Body | None = None
        self.received_any = False
        self.released = False
        self.abandoned = False  # the request body was cut short: never reuse
        self.upgrading = False  # the request asked for a protocol upgrade (a WebSocket)
        self.upgraded: bytearray | None = None  # after a 101: the new protocol's bytes so far
        self._reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._writing_paused = False

    # --- asyncio ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = UpstreamProtocolError("the upstream closed the connection")
        self._fail(error)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(error)
            self._drain.exception()  # seen, as the head's

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded += data  # held for the tunnel that takes this connection over
            return
        if not self.asked or self.released:
            # Nothing was asked: stray bytes on an idle connection. Never reuse it.
            self._broken(UpstreamProtocolError("unexpected bytes from the upstream"))
            return
        self.received_any = True
        if self.final is None:
            self._pending += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as switch:
            self._switched(data[switch.args[0] :])
            return
        except httptools.HttpParserError:
            self._broken(UpstreamProtocolError("the upstream's answer is not HTTP"))
            return
        if self._bad:
            self._broken(UpstreamProtocolError("the upstream's head breaks RFC 9112"))
            return
        # Told after the parser returns, never from inside its callbacks: the listener
        # may hand this connection to the next request at once.
        if self.listener is not None and self.final is not None:
            self.listener.on_progress(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # --- httptools callbacks ---

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        # A 101 that answers our upgrade is the final answer; any other 1xx is skipped.
        self._informational = 100 <= status < 200 and not (status == 101 and self.upgrading)
        # The head just parsed, from the bytes llhttp was fed (it does not say where).
        pending, begun = self._pending, self._head_at
        end = pending.find(b"\r\n\r\n", begun) + 4
        self._head_at = end
        if self._informational:
            return
        try:  # no blank line found (bare LFs): what is scanned does not end as a head must
            reason, fields = scan_response(bytes(pending[begun:end]))
        except GatewayError:
            self._bad = True
            return
        pending.clear()
        length = fields.get("Content-Length")
        head = Head(status, reason, fields, int(length) if length and length.isdigit() else None)
        self.body = Body(self)
        self.final = head
        if self.head_only or status in (204, 304):
            self.keep_alive = False if self.head_only else self.parser.should_keep_alive()
            self.body.feed_eof()
        if self._head is not None and not self._head.done():
            self._head.set_result(head)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # an early answer ends the upload

    def on_body(self, body: bytes) -> None:
        if self.body is not None and not self.head_only:
            self.body.feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.head_only:
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.body is not None:
            self.body.feed_eof()

    # --- use ---

    def _switched(self, rest: bytes) -> None:
        """The head just parsed switched protocols (RFC 9110 §15.2.2): what follows it is
        no longer HTTP. Held, unread, for the tunnel (``gateway.http.tunnel``)."""
        final = self.final
        if not self.upgrading or final is None or final.status != 101:
            self._broken(UpstreamProtocolError("the upstream switched protocols unasked"))
            return
        self.upgraded = bytearray(rest)
        self.pause_reading()
        assert self.body is not None
        self.body.feed_eof()

    def _broken(self, error: UpstreamProtocolError) -> None:
        self.keep_alive = False
        self._fail(error)
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: UpstreamProtocolError) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # seen: a call that gave up on it never awaits it
        if self.body is not None:
            self.body.fail(error)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_failure(self, error)

    def start(
        self, head_only: bool, listener: Listener | None = None, upgrading: bool = False
    ) -> None:
        """Expect the answer to a request about to be written: awaited with ``head()``, or
        told to ``listener`` as it arrives."""
        self.head_only = head_only
        self.upgrading = upgrading
        self.keep_alive = False
        self.body = None
        self.final = None
        self._pending.clear()
        self._head_at = 0
        self._bad = False
        self.received_any = False
        self.asked = True
        self.listener = listener
        self._head = self.loop.create_future() if listener is None else None

    async def head(self, timeout: float) -> Head:
        """The response head, or TimeoutError after ``timeout`` seconds of waiting. A timer
        handle rather than an ``asyncio.timeout`` block: cheaper, on every request."""
        assert self._head is not None
        head = self._head
        if head.done():
            return head.result()
        timer = self.loop.call_later(timeout, self._head_timed_out, head)
        try:
            return await head
        finally:
            timer.cancel()

    @staticmethod
    def _head_timed_out(head: asyncio.Future[Head]) -> None:
        if not head.done():
            head.set_exception(TimeoutError())

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None:
            raise UpstreamProtocolError("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the upstream takes more; TimeoutError if it stops reading."""
        if self._writing_paused and not self.lost:
            self._drain = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(timeout):
                await self._drain

    @property
    def answered(self) -> bool:
        """The response head has arrived (perhaps before the request body was sent)."""
        return self.final is not None

    @property
    def reusable(self) -> bool:
        return (
            self.keep_alive
            and not self.abandoned
            and not self.lost
            and self.body is not None
            and self.body.done
            and not self._reading_paused
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_head(
    method: str, target: str, host: str, lines: bytes | bytearray, chunked: bool
) -> bytes:
    """The head of a request to an upstream: ``lines``, its field lines but Host."""
    start = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode()
    return b"".join((start, lines, CHUNKED_END if chunked else b"\r\n"))


async def send_body(
    conn: UpstreamProtocol,
    body: AsyncIterator[bytes],
    chunked: bool,
    timeout: float | None = None,
) -> None:
    """Stream the request body; an upstream that answers early (413, 401, ...) stops the
    upload, since what it says is what the client must hear."""
    async for chunk in body:
        if not chunk:
            continue
        if conn.answered:
            conn.abandoned = True  # the rest of the body was never sent
            return
        if chunked:
            conn.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        else:
            conn.write(chunk)
        await conn.drain(timeout)
    if chunked:
        conn.write(b"0\r\n\r\n")
