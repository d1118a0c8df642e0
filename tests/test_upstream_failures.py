"""Upstreams that misbehave: garbage, resets, silence, truncation. Never a 500.

The misbehaving upstream is a raw TCP server written here on purpose: no
well-behaved HTTP framework can be made to send these answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from conftest import Gateway

BEHAVIOURS: dict[str, bytes | None] = {
    "garbage": b"HELLO THERE\r\n\r\n",
    "bad-status": b"HTTP/1.1 99999 Nope\r\nContent-Length: 0\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header\r\n\r\nok",
    "reset": b"",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
    # Larger than the gateway relays whole, so it streams: the cut reaches the client.
    "truncated-large": b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n" + b"x" * 200_000,
    "silent": None,
    # A switch of protocols nobody asked for: the rest is not HTTP.
    "unasked-switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
    b"Connection: upgrade\r\n\r\nnot http",
}


async def serve_badly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        behaviour = BEHAVIOURS[path.strip("/").split("/")[-1]]
        if behaviour is None:
            await asyncio.sleep(5)
        else:
            writer.write(behaviour)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError, KeyError):
        pass
    finally:
        writer.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A raw TCP upstream on loopback; its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, str]]:
    """ "bad" answers one request per connection; "kept" keeps its connections alive."""
    async with (
        serving(serve_badly) as bad,
        serving(serve_kept) as kept,
        serving(serve_sockets) as sockets,
    ):
        yield {"bad": bad, "kept": kept, "sockets": sockets}


@pytest.fixture
def config(config: dict[str, Any], upstreams: dict[str, str]) -> dict[str, Any]:
    for name, url in upstreams.items():
        config["upstreams"][name] = {"url": url, "timeout": 0.5}
        config["routes"].append(
            {"path": f"/{name}/**", "upstream": name, "websocket": name == "sockets"}
        )
    return config


FAILURES = pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("garbage", 502, "bad_gateway"),
        ("bad-status", 502, "bad_gateway"),
        ("bad-header", 502, "bad_gateway"),
        ("reset", 502, "bad_gateway"),
        ("silent", 504, "gateway_timeout"),
        ("unasked-switch", 502, "bad_gateway"),
        # A small body is read whole before answering, so its truncation is still a 502.
        ("truncated", 502, "bad_gateway"),
    ],
)


@FAILURES
async def test_broken_upstream_answers_json(
    gw: Gateway, behaviour: str, status: int, code: str
) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get(f"/bad/{behaviour}", headers={"X-API-Key": key.secret})
    assert resp.status == status
    assert (await resp.json())["error"] == code


async def test_truncated_upstream_body_is_not_passed_off_as_complete(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/bad/truncated-large", headers={"X-API-Key": key.secret})
    assert resp.status == 200  # the headers were already good
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    # The gateway stays healthy for the next request.
    ok = await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    assert ok.status == 200
    assert gw.admin is not None
    metrics = await (await gw.admin.get("/metrics")).text()
    assert 'gateway_upstream_errors_total{kind="truncated",upstream="bad"} 1.0' in metrics


# The same misbehaviour on a kept-alive connection: the request after a good one goes
# out on the idle connection from a protocol callback (gateway/pipeline/inline.py).
KEPT_ANSWERS: dict[str, bytes | None] = {
    **BEHAVIOURS,
    "ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    # Streamed onwards rather than relayed whole: no length, or more than 64 KiB.
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "large": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 100_000,
}


async def serve_kept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers requests one after another on one connection, each as its path says."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            answer = KEPT_ANSWERS[head.split(b" ", 2)[1].decode().rsplit("/", 1)[-1]]
            if answer is None:
                await asyncio.sleep(5)
                return
            writer.write(answer)
            await writer.drain()
            if answer in (b"", BEHAVIOURS["truncated"], BEHAVIOURS["truncated-large"]):
                return
    except (OSError, asyncio.IncompleteReadError, KeyError):
        pass
    finally:
        writer.close()


@FAILURES
async def test_a_kept_alive_upstream_that_misbehaves_answers_json(
    gw: Gateway, behaviour: str, status: int, code: str
) -> None:
    key = await gw.mint(["contacts:read"])
    headers = {"X-API-Key": key.secret}
    assert (await gw.client.get("/kept/ok", headers=headers)).status == 200
    resp = await gw.client.get(f"/kept/{behaviour}", headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"] == code
    # The broken connection was dropped; the next request gets a good one.
    again = await gw.client.get("/kept/ok", headers=headers)
    assert again.status == 200
    assert await again.read() == b"ok"


@pytest.mark.parametrize(("behaviour", "body"), [("chunked", b"abcde"), ("large", b"y" * 100_000)])
async def test_a_streamed_answer_on_a_kept_alive_connection_arrives_whole(
    gw: Gateway, behaviour: str, body: bytes
) -> None:
    key = await gw.mint(["contacts:read"])
    headers = {"X-API-Key": key.secret}
    for _ in range(2):  # then reused by the next call, once read to its end
        assert await (await gw.client.get("/kept/ok", headers=headers)).read() == b"ok"
        resp = await gw.client.get(f"/kept/{behaviour}", headers=headers)
        assert resp.status == 200
        assert await resp.read() == body


async def serve_sockets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """WebSocket handshakes answered badly: a 101 to another protocol, or a proper 101
    and then the connection dropped without a close frame."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        protocol = b"websocket" if b"/sockets/gone" in head else b"h2c"
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + protocol +
                     b"\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                     b"\r\n\r\n\x81\x02hi")  # fmt: skip
        await writer.drain()
        await asyncio.sleep(0.2)
    except (OSError, asyncio.IncompleteReadError, StopIteration):
        pass
    finally:
        writer.close()


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


async def test_a_switch_to_another_protocol_is_a_502(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.client.ws_connect("/sockets/wrong", headers={"X-API-Key": key.secret})
    assert refused.value.status == 502


async def test_an_upstream_gone_without_a_close_is_told_to_the_client(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    ws = await gw.client.ws_connect("/sockets/gone", headers={"X-API-Key": key.secret})
    assert (await ws.receive(timeout=2)).data == "hi"  # the frame that came with the 101
    message = await ws.receive(timeout=2)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1014
