"""Endpoints for testing a proxy in front of this backend; none needs an org.

They show what arrived (``/echo``), stream large or late bodies (``/bytes``,
``/slow-body``), answer late (``/slow``) and answer with any status
(``/status/{code}``). Bodies are streamed both ways, never held whole.
``/ws/echo`` is a WebSocket that first says what its handshake carried, then
echoes every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Final

from aiohttp import HttpVersion11, hdrs, web

from upstream_example.errors import InvalidParameter
from upstream_example.validation import parse_float_param, parse_int_param

CHUNK_SIZE: Final = 64 * 1024
MAX_BYTES: Final = 10**11
MAX_DELAY: Final = 120.0
DEFAULT_DELAY: Final = 1.0
# /bytes/{n} sends byte i = PATTERN[i % len(PATTERN)]; a chunk holds whole patterns.
PATTERN: Final = b"0123456789abcdef"

_BLOCK: Final = memoryview(PATTERN * (CHUNK_SIZE // len(PATTERN)))
# Statuses whose responses carry no body (RFC 9110 §15.3.6, §15.4.5).
_BODILESS_STATUSES: Final = frozenset({204, 205, 304})
_FLAGS: Final = {"0": False, "false": False, "1": True, "true": True}


async def status(request: web.Request) -> web.Response:
    """A liveness probe."""
    return web.json_response({"status": "ok", "service": "upstream_example"})


async def status_code(request: web.Request) -> web.Response:
    """``GET /status/{code}``: answer with that status (200-599) to test passthrough."""
    code = parse_int_param("code", request.match_info["code"], minimum=200, maximum=599)
    if code in _BODILESS_STATUSES:
        return web.Response(status=code)
    return web.json_response({"status": code}, status=code)


def _decode_header(raw: bytes) -> str:
    # Header bytes are not guaranteed UTF-8; latin-1 maps every byte to a char.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def echo(request: web.Request) -> web.Response:
    """Describe the request as received: every header in order, and a digest of the body."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(CHUNK_SIZE):
        digest.update(chunk)
        length += len(chunk)
    path, _, query = request.raw_path.partition("?")
    headers = [[_decode_header(name), _decode_header(value)] for name, value in request.raw_headers]
    return web.json_response(
        {
            "method": request.method,
            "path": path,
            "query": query,
            "headers": headers,
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


def _client_may_leave() -> contextlib.suppress:
    """Stop streaming quietly when the client hangs up; proxies under test do that."""
    return contextlib.suppress(ConnectionError)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "0").lower()
    if text not in _FLAGS:
        raise InvalidParameter(f"{name}: must be one of {', '.join(_FLAGS)}.")
    return _FLAGS[text]


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    """``GET /bytes/{n}``: n pattern bytes in 64 KiB writes; ``?chunked=1`` omits the length."""
    remaining = parse_int_param("n", request.match_info["n"], minimum=0, maximum=MAX_BYTES)
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/octet-stream"})
    if _flag(request, "chunked"):
        if request.version < HttpVersion11:
            raise InvalidParameter("chunked: chunked transfer coding needs HTTP/1.1.")
        response.enable_chunked_encoding()
    else:
        response.content_length = remaining
    await response.prepare(request)
    with _client_may_leave():
        if request.method != hdrs.METH_HEAD:
            while remaining > 0:
                size = min(remaining, CHUNK_SIZE)
                await response.write(_BLOCK[:size])
                remaining -= size
        await response.write_eof()
    return response


def _delay(request: web.Request) -> float:
    text = request.query.get("delay")
    if text is None:
        return DEFAULT_DELAY
    return parse_float_param("delay", text, minimum=0.0, cap=MAX_DELAY)


async def slow(request: web.Request) -> web.Response:
    """``/slow?delay=S``: wait (at most 120 s), then answer; for testing upstream timeouts."""
    delay = _delay(request)
    await asyncio.sleep(delay)
    return web.json_response({"slept": delay})


async def slow_body(request: web.Request) -> web.StreamResponse:
    """``/slow-body?delay=S``: send the headers now and the body after the delay."""
    delay = _delay(request)
    body = json.dumps({"slept": delay}).encode()
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json"})
    response.content_length = len(body)
    await response.prepare(request)  # StreamResponse flushes the headers here
    await asyncio.sleep(delay)
    with _client_may_leave():
        if request.method != hdrs.METH_HEAD:
            await response.write(body)
        await response.write_eof()
    return response


WS_MAX_MESSAGE: Final = 64 * 1024 * 1024


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws/echo`` (WebSocket): a first text message describing the handshake (path
    and headers), then every text or binary message echoed back. The text ``close
    CODE`` makes this side close with that code."""
    ws = web.WebSocketResponse(max_msg_size=WS_MAX_MESSAGE, autoping=True)
    await ws.prepare(request)
    hello = {"path": request.raw_path,
             "headers": [[k, v] for k, v in request.headers.items()]}  # fmt: skip
    await ws.send_str(json.dumps(hello))
    async for message in ws:
        if message.type == web.WSMsgType.TEXT:
            if message.data.startswith("close "):
                await ws.close(code=int(message.data.split()[1]), message=b"asked to")
                break
            await ws.send_str(message.data)
        elif message.type == web.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


def add_diagnostic_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/ws/echo", ws_echo)
    router.add_get("/status", status)
    router.add_get("/status/{code}", status_code)
    router.add_route("*", "/echo", echo)
    router.add_route("*", "/echo/{tail:.*}", echo)
    router.add_get("/bytes/{n}", stream_bytes)
    router.add_route("*", "/slow", slow)
    router.add_route("*", "/slow-body", slow_body)
