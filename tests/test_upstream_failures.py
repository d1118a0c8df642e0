"""Upstreams that misbehave: garbage, resets, silence, truncation. Never a 500.

The misbehaving upstream is a raw TCP server written here on purpose: no
well-behaved HTTP framework can be made to send these answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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


@pytest.fixture
async def bad_upstream() -> AsyncIterator[str]:
    server = await asyncio.start_server(serve_badly, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


@pytest.fixture
def config(config: dict[str, Any], bad_upstream: str) -> dict[str, Any]:
    config["upstreams"]["bad"] = {"url": bad_upstream, "timeout": 0.5}
    config["routes"].append({"path": "/bad/**", "upstream": "bad"})
    return config


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("garbage", 502, "bad_gateway"),
        ("bad-status", 502, "bad_gateway"),
        ("bad-header", 502, "bad_gateway"),
        ("reset", 502, "bad_gateway"),
        ("silent", 504, "gateway_timeout"),
        # A small body is read whole before answering, so its truncation is still a 502.
        ("truncated", 502, "bad_gateway"),
    ],
)
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
