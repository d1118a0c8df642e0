"""HTTP/1.1 framing for the fast lane (``gateway.front``): request heads in,
response heads out, each as aiohttp would read or write them, so that both
lanes give the same bytes."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import httptools
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

Headers = list[tuple[str, str]]  # fields in order

FAST_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_HEAD: Final = 8190  # bytes; aiohttp's own line limit, so nothing it refuses gets by
MAX_FIELDS: Final = 100  # aiohttp refuses more than 128
FAST_BODY: Final = 64 * 1024
UNUSUAL: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Fields aiohttp refuses to see twice (RFC 9110 gives them one value).
SINGLE: Final = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"user-agent",
    }
)
EMPTY_BODY_STATUS: Final = frozenset({204, 304})

PHRASES: Final = {s.value: s.phrase for s in HTTPStatus}


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    length: int  # of the body, from Content-Length (0 if absent)


class _HeadReader:
    """httptools callbacks for one request head."""

    __slots__ = ("complete", "fields", "url")

    # httptools looks every callback up with getattr(protocol, name, None) for each new
    # parser: a missing one costs an AttributeError raised and caught, on every request.
    on_message_begin = on_body = on_message_complete = None
    on_chunk_header = on_chunk_complete = None

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def read_head(data: bytes) -> RequestHead | None:
    """The head of a fast-lane request (``data`` ends with its blank line), or None when
    the request is not one for the fast lane or is not valid HTTP (aiohttp will say)."""
    reader = _HeadReader()
    parser = httptools.HttpRequestParser(reader)
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None
    if not reader.complete or parser.get_http_version() != "1.1":
        return None
    method = parser.get_method().decode("ascii", "replace")
    if method not in FAST_METHODS or not reader.url.isascii() or len(reader.fields) > MAX_FIELDS:
        return None
    seen: set[bytes] = set()
    length = 0
    keep_alive = True  # HTTP/1.1's default (RFC 9112 §9.3)
    headers = []
    for name, value in reader.fields:
        key = name.lower()
        if key in UNUSUAL or (key in SINGLE and key in seen):
            return None
        seen.add(key)
        if key == b"content-length":
            length = int(value)  # llhttp has checked it is digits
        elif key == b"connection" and b"close" in (t.strip() for t in value.lower().split(b",")):
            keep_alive = False
        headers.append((name.decode("utf-8", "surrogateescape"),
                        value.decode("utf-8", "surrogateescape")))  # fmt: skip
    if length > FAST_BODY:
        return None
    return RequestHead(method, reader.url.decode("ascii"), headers, keep_alive, length)


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class ResponseHead:
    data: bytes
    bodiless: bool  # nothing may follow the head (HEAD, 1xx, 204, 304)
    chunked: bool  # the body goes in chunks (streamed, no Content-Length)


def response_head(
    method: str, status: int, reason: str, headers: Headers, length: int | None, close: bool
) -> ResponseHead:
    """Status line and fields, completed as aiohttp completes its responses. ``length``:
    the body's, for an answer sent whole; None for a streamed one (the upstream's
    Content-Length, or chunked)."""
    no_body_status = status in EMPTY_BODY_STATUS or status < 200
    bodiless = method == "HEAD" or no_body_status
    lines = [f"HTTP/1.1 {status} {reason or PHRASES.get(status, '')}"]
    declared = None
    typed = dated = named = False
    for name, value in headers:
        key = name.lower()
        if key == "content-length":
            if length is not None or no_body_status:
                continue  # replaced below, or never sent (RFC 9110 §8.6)
            declared = value
        elif key == "content-type":
            typed = True
        elif key == "date":
            dated = True
        elif key == "server":
            named = True
        lines.append(f"{name}: {value}")
    chunked = False
    if length is not None:
        if not no_body_status:
            lines.append(f"Content-Length: {length}")
    elif not bodiless and declared is None:
        chunked = True
        lines.append("Transfer-Encoding: chunked")
    empty = length == 0 if length is not None else declared == "0"
    if not typed and not bodiless and not empty:
        lines.append("Content-Type: application/octet-stream")
    if not dated:
        lines.append(f"Date: {rfc822_formatted_time()}")
    if not named:
        lines.append(f"Server: {SERVER_SOFTWARE}")
    if close:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return ResponseHead(data, bodiless, chunked)
