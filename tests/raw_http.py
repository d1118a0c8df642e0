"""Raw HTTP/1.1 over loopback sockets, for what a client library would normalize,
refuse or hide.

The client side sends a request byte for byte to the ``gw`` fixture's server
(``raw_request``) and parses the answer's head (``parse_head``); the server side
(``RawServer``) is an upstream that answers exactly what its handler writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conftest import Gateway
from multidict import CIMultiDict

HOST = "gateway.test"

# --- the client side --------------------------------------------------------

Header = tuple[str | bytes, str | bytes]
RAW_TIMEOUT = 5.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def wire(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


async def raw_request(
    gw: Gateway,
    method: str,
    target: str | bytes,
    headers: Sequence[Header] = (),
    *,
    body: bytes = b"",
) -> RawResponse:
    """Send one request byte for byte and read one response (not for HEAD).

    Adds ``Host`` and, unless the caller sends a Connection header of its own,
    ``Connection: close``.
    """
    lines = [wire(method) + b" " + wire(target) + b" HTTP/1.1", b"Host: " + wire(HOST)]
    lines += [wire(name) + b": " + wire(value) for name, value in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if not any(wire(name).lower() == b"connection" for name, _ in headers):
        lines.append(b"Connection: close")
    port = gw.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return await asyncio.wait_for(read_response(reader), RAW_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # an interim answer such as 100 Continue
        head = await reader.readuntil(b"\r\n\r\n")
    status, headers = parse_head(head)
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)


def parse_head(head: bytes) -> tuple[int, CIMultiDict[str]]:
    """The status and fields of a response head (up to its blank line)."""
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(status_line.split(" ")[1]), headers


# --- the server side --------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                return head + body
            body += await reader.readexactly(size)
            await reader.readline()
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head
