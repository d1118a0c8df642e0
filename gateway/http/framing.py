"""HTTP/1.1 framing for the proxy engine (RFC 9112): request heads and bodies in,
response heads out.

A head is delimited here (its blank line) and scanned by ``heads``, compiled,
which checks the syntax of every line. Bodies are delimited here, over the
connection's buffer, by ``BodyFraming``: a Content-Length count or the chunked
coding. It is ours rather than llhttp's because the engine must know where each
request ends in the buffer (to hand the rest of a connection to aiohttp, or to
start the next pipelined request), which httptools does not say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from aiohttp.helpers import rfc822_formatted_time

from gateway.errors import HeadTooLarge, MalformedRequest
from gateway.http.heads import HOP_BY_HOP, MAX_HEAD, Fields, RequestHead, Skip

Headers = list[tuple[str, str]]  # fields in order

MAX_CHUNK_LINE: Final = 4096  # a chunk-size line with its extensions
MAX_TRAILERS: Final = 8192  # bytes of trailer fields, read and dropped
EMPTY_BODY_STATUS: Final = frozenset({204, 304})
HEX: Final = frozenset(b"0123456789abcdefABCDEF")

PHRASES: Final = {s.value: s.phrase for s in HTTPStatus}
# An upstream's fields the client never sees: hop-by-hop ones, and its Server field,
# which the gateway's own replaces (as nginx and Envoy do: no upstream software or
# version is announced); for an answer sent whole, its Content-Length too.
RELAYED: Final = Skip(frozenset(n.encode() for n in (*HOP_BY_HOP, "server")))
RELAYED_WHOLE: Final = Skip(RELAYED.names | {b"content-length"})


def head_end(buffer: bytearray) -> int:
    """Where the head at the start of ``buffer`` ends (just past its blank line); -1
    while more bytes are needed. A line ended by a bare LF is refused (RFC 9112 §2.2
    lets a server refuse it, and a proxy must not read it differently from its
    upstream), and so is a head longer than MAX_HEAD."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    scanned = end + 4 if end >= 0 else min(len(buffer), MAX_HEAD + 4)
    if buffer.count(b"\n", 0, scanned) != buffer.count(b"\r\n", 0, scanned):
        raise MalformedRequest()
    if end >= 0:
        return end + 4
    if len(buffer) > MAX_HEAD:
        raise HeadTooLarge()
    return -1


class BodyFraming:
    """Where a request body ends in the connection's buffer, and its bytes as the
    upstream gets them (a chunked body decoded: the Forwarder frames it again)."""

    __slots__ = ("chunked", "done", "remaining", "state", "trailers")

    SIZE, DATA, DATA_END, TRAILER = range(4)

    def __init__(self, head: RequestHead) -> None:
        self.chunked = head.chunked
        self.remaining = head.length  # of the body, or of the current chunk
        self.done = not head.has_body
        self.state = self.SIZE
        self.trailers = 0

    def take(self, buffer: bytearray) -> bytes:
        """Remove the body's bytes from the front of ``buffer`` and return them decoded
        (b"" when more are needed); MalformedRequest for a broken chunked coding."""
        if self.done:
            return b""
        if not self.chunked:
            n = min(self.remaining, len(buffer))
            data = bytes(buffer[:n])
            del buffer[:n]
            self.remaining -= n
            self.done = self.remaining == 0
            return data
        pieces = []
        while not self.done:
            if self.state == self.DATA:
                n = min(self.remaining, len(buffer))
                if n == 0:
                    break
                pieces.append(bytes(buffer[:n]))
                del buffer[:n]
                self.remaining -= n
                if self.remaining == 0:
                    self.state = self.DATA_END
                continue
            if self.state == self.DATA_END:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise MalformedRequest()
                del buffer[:2]
                self.state = self.SIZE
                continue
            line = self._line(buffer)
            if line is None:
                break
            if self.state == self.SIZE:
                self._size(line)
            elif line:  # a trailer field: read, bounded, and dropped (RFC 9112 §7.1.2)
                self.trailers += len(line)
                if self.trailers > MAX_TRAILERS:
                    raise MalformedRequest()
            else:
                self.done = True
        return b"".join(pieces)

    def take_raw(self, buffer: bytearray) -> bytes:
        """``take``, returning the body's bytes as they were sent (chunked coding and
        all): for a request passed on to aiohttp, which decodes it itself."""
        if not self.chunked:
            return self.take(buffer)
        before = bytes(buffer)
        self.take(buffer)
        return before[: len(before) - len(buffer)]

    def _line(self, buffer: bytearray) -> bytes | None:
        end = buffer.find(b"\n", 0, MAX_CHUNK_LINE)
        if end < 0:
            if len(buffer) >= MAX_CHUNK_LINE:
                raise MalformedRequest()
            return None
        if end == 0 or buffer[end - 1] != 0x0D:
            raise MalformedRequest()  # a bare LF
        line = bytes(buffer[: end - 1])
        del buffer[: end + 1]
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in line):
            raise MalformedRequest()
        return line

    def _size(self, line: bytes) -> None:
        """chunk-size [ chunk-ext ] (RFC 9112 §7.1.1)."""
        size = line.split(b";", 1)[0]
        if not size or len(size) > 16 or not all(b in HEX for b in size):
            raise MalformedRequest()
        self.remaining = int(size, 16)
        self.state = self.DATA if self.remaining else self.TRAILER


@dataclass(slots=True)
class Relayed:
    """An upstream's answer fields as the client gets them: copied from the upstream's
    head (``heads.Fields.forwarded``: the hop-by-hop ones, its Server field and any
    Set-Cookie of the gateway's session cookie left out), then ``extra``."""

    fields: Fields
    cookie: bytes  # the gateway's session cookie's name
    extra: Headers

    def lines(self, whole: bool) -> bytearray:
        """The fields as lines; ``whole``: without Content-Length, which the gateway
        writes itself for an answer sent whole (or never, RFC 9110 §8.6)."""
        lines = self.fields.forwarded(RELAYED_WHOLE if whole else RELAYED, self.cookie, True)
        lines += field_lines(self.extra)
        return lines

    def items(self) -> Headers:
        """The same fields as pairs (a paid answer kept for its retries)."""
        pairs = []
        for line in bytes(self.lines(False)).split(b"\r\n"):
            if line:
                name, _, value = line.partition(b":")
                pairs.append((name.decode("latin-1"),
                              value.strip(b" \t").decode("utf-8", "surrogateescape")))  # fmt: skip
        return pairs

    def plus(self, extra: Headers) -> Relayed:
        return Relayed(self.fields, self.cookie, [*self.extra, *extra])


AnswerFields = Headers | Relayed  # the gateway's own fields, or an upstream's relayed


def field_lines(fields: Iterable[tuple[str, str]]) -> bytes:
    """Fields as the lines of a head (values the gateway decoded go back as they came)."""
    return "".join([f"{name}: {value}\r\n" for name, value in fields]).encode(
        "utf-8", "surrogateescape"
    )


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class ResponseHead:
    data: bytes
    bodiless: bool  # nothing may follow the head (HEAD, 1xx, 204, 304)
    chunked: bool  # the body goes in chunks (streamed, no Content-Length)
    close: bool  # the connection ends after this answer


def response_head(
    method: str,
    status: int,
    reason: str,
    headers: AnswerFields,
    length: int | None,
    close: bool,
    http10: bool = False,
    server: str = "gateway",
) -> ResponseHead:
    """Status line and fields, completed as aiohttp completes its responses. ``length``:
    the body's, for an answer sent whole; None for a streamed one (the upstream's
    Content-Length, or chunked; to an HTTP/1.0 client, delimited by closing)."""
    no_body_status = status in EMPTY_BODY_STATUS or status < 200
    bodiless = method == "HEAD" or no_body_status
    whole = length is not None or no_body_status
    declared: str | None = None
    if isinstance(headers, Relayed):  # copied from the upstream's head
        fields = headers.fields
        lines = headers.lines(whole)
        declared = None if whole else fields.get("Content-Length")
        typed, dated, named = "Content-Type" in fields, "Date" in fields, False
    else:
        typed = dated = named = False
        own: Headers = []
        for name, value in headers:
            key = name.lower()
            if key == "content-length":
                if whole:
                    continue  # replaced below, or never sent (RFC 9110 §8.6)
                declared = value
            elif key == "content-type":
                typed = True
            elif key == "date":
                dated = True
            elif key == "server":
                named = True
            own.append((name, value))
        lines = bytearray(field_lines(own))
    extra = []
    chunked = False
    if length is not None:
        if not no_body_status:
            extra.append(f"Content-Length: {length}")
    elif not bodiless and declared is None:
        if http10:
            close = True  # no chunked coding in HTTP/1.0: the end of the body is the close
        else:
            chunked = True
            extra.append("Transfer-Encoding: chunked")
    empty = length == 0 if length is not None else declared == "0"
    if not typed and not bodiless and not empty:
        extra.append("Content-Type: application/octet-stream")
    if not dated:
        extra.append(f"Date: {rfc822_formatted_time()}")
    if not named:
        extra.append(f"Server: {server}")  # the config's ``server_header``; never a version
    if close:
        extra.append("Connection: close")
    elif http10:
        extra.append("Connection: keep-alive")
    start = f"HTTP/1.1 {status} {reason or PHRASES.get(status, '')}\r\n"
    end = "\r\n".join(extra) + "\r\n\r\n"
    data = b"".join((start.encode("latin-1", "replace"), lines,
                     end.encode("utf-8", "surrogateescape")))  # fmt: skip
    return ResponseHead(data, bodiless, chunked, close)
