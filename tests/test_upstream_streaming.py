"""Streaming between a client and an upstream when either side misbehaves, against
raw upstreams on loopback: one answers 413 before reading the request body, one
stops reading it, one sends response header bytes that are not ASCII; and a
client that leaves in the middle of its upload."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import Gateway
from raw_http import RawServer, read_request


async def early_413(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
    await writer.drain()
    await asyncio.sleep(10)  # never reads the body, never closes


async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(10)


async def latin1_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; filename=caf\xe9.txt\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    await writer.drain()


@pytest.fixture
async def raw_upstreams() -> Any:
    async with (
        RawServer(early_413) as early,
        RawServer(never_reads) as stuck,
        RawServer(latin1_header) as latin,
    ):
        yield {"early": early, "stuck": stuck, "latin": latin}


@pytest.fixture
def config(config: dict[str, Any], raw_upstreams: Any) -> dict[str, Any]:
    for name, server in raw_upstreams.items():
        config["upstreams"][name] = {"url": f"http://127.0.0.1:{server.port}", "timeout": 1}
        config["routes"].append({"path": f"/{name}/**", "auth": "none", "upstream": name})
    return config


async def big_body() -> Any:
    block = b"x" * (1 << 20)
    for _ in range(64):
        yield block


async def test_an_early_upstream_answer_reaches_the_client(gw: Gateway) -> None:
    started = time.monotonic()
    resp = await gw.client.post("/early/x", data=big_body())
    assert resp.status == 413
    assert await resp.read() == b"too big!"
    assert time.monotonic() - started < 5


async def test_an_upstream_that_stops_reading_is_a_504(gw: Gateway) -> None:
    started = time.monotonic()
    resp = await gw.client.post("/stuck/x", data=big_body())
    assert resp.status == 504
    assert (await resp.json())["error"] == "gateway_timeout"
    assert time.monotonic() - started < 5
    assert gw.admin is not None
    metrics = await (await gw.admin.get("/metrics")).text()
    assert "gateway_requests_in_flight 0.0" in metrics


async def test_a_client_leaving_mid_upload_is_not_an_internal_error(gw: Gateway) -> None:
    port = gw.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /public/echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    writer.write(b"y" * 1000)
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.3)
    assert gw.admin is not None
    metrics = await (await gw.admin.get("/metrics")).text()
    assert 'status_class="5xx"' not in metrics
    assert "gateway_requests_in_flight 0.0" in metrics
    del reader


async def test_upstream_header_bytes_that_are_not_utf8_pass_unchanged(gw: Gateway) -> None:
    # The answer's fields are copied from the upstream's head, byte for byte: a
    # Latin-1 filename reaches the client as the upstream wrote it, never altered.
    port = gw.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /latin/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Disposition: attachment; filename=caf\xe9.txt\r\n" in answer
    assert answer.endswith(b"\r\n\r\nok")
