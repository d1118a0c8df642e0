"""A WebSocket after its handshake: the client's connection and the upstream's,
joined until either ends.

Bytes go both ways as they arrive and are never decoded: frames, masks,
fragments and extensions (permessage-deflate) reach each side unchanged, and a
slow reader pauses the other side's reading (back-pressure both ways). Only
the frame headers are followed (``Frames``, RFC 6455 §5.2), so that the gateway
can put a close frame of its own between two of the upstream's frames when it
ends a socket itself: credential revoked or expired (4401, told by
``gateway.pipeline.sockets``), idle for ``proxy.websocket_idle_timeout``
(1001), the gateway shutting down (1001), the upstream gone without a close
(1014). Ours rather than a library's: wsproto and aiohttp's WebSocket code
decode, unmask and re-frame every message, which is work this relay need not
do and a change to the frames it promises to pass on as they are.

The client's connection stays the engine's (``Connection``), which feeds the
tunnel its bytes; the upstream's transport is the tunnel's from the 101 on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from gateway.pipeline.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from gateway.http.connection import Connection

GOING_AWAY: Final = 1001
BAD_GATEWAY: Final = 1014  # the upstream went away without closing (IANA registry)
FINISH_GRACE: Final = 0.5  # seconds to wait for the end of a frame before a close frame
EXTRA: Final = [0] * 126 + [2, 8]  # extended payload length bytes, by the 7-bit length
CLOSE: Final = 0x8


class Frames:
    """Where the frames of one direction end: their headers read, payloads skipped."""

    __slots__ = ("closed", "head", "left")

    def __init__(self) -> None:
        self.head = bytearray()  # a header split across reads
        self.left = 0  # payload bytes of the current frame still to come
        self.closed = False  # a close frame was seen

    @property
    def between(self) -> bool:
        """At a frame boundary: a frame of our own may go next."""
        return self.left == 0 and not self.head

    def scan(self, data: bytes, stop: bool = False) -> int:
        """Follow ``data``; with ``stop``, only up to the first frame boundary. How many
        bytes were followed."""
        i, n = 0, len(data)
        while i < n:
            if stop and self.between:
                return i
            if self.left:
                step = min(self.left, n - i)
                self.left -= step
                i += step
                continue
            head = self.head
            if not head and n - i >= 2:  # a whole header in this read: no copy
                size = header_size(data[i + 1])
                if n - i >= size:
                    self._header(data[i : i + size])
                    i += size
                    continue
            head.append(data[i])
            i += 1
            if len(head) >= 2 and len(head) == header_size(head[1]):
                self._header(bytes(head))
                head.clear()
        return i

    def _header(self, header: bytes) -> None:
        if header[0] & 0x0F == CLOSE:
            self.closed = True
        length = header[1] & 0x7F
        if length >= 126:
            length = int.from_bytes(header[2 : 2 + EXTRA[length]], "big")
        self.left = length


def header_size(second: int) -> int:
    """A frame header's length, from its second byte (mask bit and 7-bit length)."""
    return 2 + EXTRA[second & 0x7F] + (4 if second & 0x80 else 0)


def close_frame(code: int, reason: str, masked: bool) -> bytes:
    """A close frame (RFC 6455 §5.5.1); masked as a client's must be (§5.3)."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    if not masked:
        return bytes((0x80 | CLOSE, len(payload))) + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | CLOSE, 0x80 | len(payload))) + key + body


class Tunnel:
    """One WebSocket's two connections, from the upstream's 101 to the close."""

    def __init__(
        self,
        client: Connection,
        upstream: UpstreamProtocol,
        idle_timeout: float,
        ended: Callable[[Tunnel], None],
    ) -> None:
        assert upstream.transport is not None and upstream.upgraded is not None
        self.client = client
        self.loop = client.loop
        self.idle_timeout = idle_timeout
        self.ended = ended  # told once, when both sides are closed
        self.down = Frames()  # upstream to client
        self.up = Frames()  # client to upstream
        self.ending: tuple[int, str] | None = None  # our close frame, once we end it
        self.finished = False
        self.active = self.loop.time()
        self.timer = self.loop.call_later(idle_timeout, self._check_idle)
        self.upstream = upstream.transport
        early = bytes(upstream.upgraded)
        self.upstream.set_protocol(UpstreamEnd(self))
        if early:
            self.from_upstream(early)
        self.upstream.resume_reading()

    # --- bytes ---

    def from_client(self, data: bytes) -> None:
        if self.finished or self.ending is not None:
            return  # we are closing: the client's last words go nowhere
        self.active = self.loop.time()
        self.up.scan(data)
        self.upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        if self.finished:
            return
        self.active = self.loop.time()
        if self.ending is None:
            self.down.scan(data)
            self.client.send(data)
            return
        upto = self.down.scan(data, stop=True)  # the end of the frame under way
        self.client.send(data[:upto])
        if self.down.between:
            self._send_close()

    # --- flow control ---

    def client_paused(self, paused: bool) -> None:
        """The client reads slowly (or again): so does the upstream's side."""
        if self.finished:
            return
        if paused:
            self.upstream.pause_reading()
        else:
            self.upstream.resume_reading()

    def upstream_paused(self, paused: bool) -> None:
        if self.client.transport is None or self.finished:
            return
        if paused:
            self.client.transport.pause_reading()
        else:
            self.client.transport.resume_reading()

    # --- ending ---

    def end(self, code: int, reason: str) -> None:
        """Close the socket ourselves: a close frame to the client as soon as the
        upstream's frame under way (if any) is through, and the upstream closed."""
        if self.finished or self.ending is not None:
            return
        self.ending = (code, reason)
        if self.up.between and not self.up.closed:
            self.upstream.write(close_frame(code, reason, masked=True))
        if self.down.between:
            self._send_close()
        else:
            self.loop.call_later(FINISH_GRACE, self.finish)

    def _send_close(self) -> None:
        assert self.ending is not None
        if not self.down.closed:
            self.client.send(close_frame(*self.ending, masked=False))
        self.finish()

    def upstream_gone(self) -> None:
        """The upstream closed its connection: the client learns it, with a close frame
        of ours if the upstream sent none."""
        if self.finished:
            return
        if not self.down.closed and self.down.between:
            self.client.send(close_frame(BAD_GATEWAY, "the upstream closed", masked=False))
        self.finish()

    def finish(self) -> None:
        """Close both connections (what is written still goes out first)."""
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        self.upstream.close()
        self.client.hang_up()
        self.ended(self)

    def _check_idle(self) -> None:
        left = self.active + self.idle_timeout - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self._check_idle)
        else:
            self.end(GOING_AWAY, "idle")


class UpstreamEnd(asyncio.Protocol):
    """The upstream's connection once it carries the socket."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self.tunnel.from_upstream(data)

    def eof_received(self) -> bool:
        self.tunnel.upstream_gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.upstream_gone()

    def pause_writing(self) -> None:
        self.tunnel.upstream_paused(True)

    def resume_writing(self) -> None:
        self.tunnel.upstream_paused(False)
