"""The lean upstream client (gateway/pipeline/upstream.py) against raw HTTP
servers on loopback that answer exactly what each case needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import Gateway, free_port
from raw_http import RawServer, read_request

from gateway.pipeline.pool import UpstreamPool
from gateway.pipeline.upstream import (
    UpstreamConnectError,
    UpstreamProtocol,
    UpstreamProtocolError,
    request_head,
    send_body,
)
from gateway.wait import resolved


async def call(
    pool: UpstreamPool, method: str = "GET", body: list[bytes] | None = None
) -> tuple[UpstreamProtocol, int, bytes]:
    conn = await resolved(pool.acquire())
    conn.start(head_only=method == "HEAD")
    chunked = body is not None
    conn.write(request_head(method, "/x", pool.host_header, b"", chunked))
    if body is not None:

        async def parts() -> AsyncIterator[bytes]:
            for part in body:
                yield part

        await send_body(conn, parts(), chunked=True)
    head = await conn.head(5)
    assert conn.body is not None
    data = await asyncio.wait_for(conn.body.read_all(1 << 30), 5)
    pool.release(conn)
    return conn, head.status, data


def pool_for(port: int) -> UpstreamPool:
    return UpstreamPool("127.0.0.1", port, limit=10, connect_timeout=2)


async def keep_alive_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def test_keep_alive_connections_are_reused() -> None:
    async with RawServer(keep_alive_ok) as server:
        pool = pool_for(server.port)
        for _ in range(5):
            conn, status, data = await call(pool)
            assert (status, data) == (200, b"ok")
        assert server.connections == 1
        assert conn.reused
        pool.close()


async def test_a_connection_in_use_when_its_pool_closes_is_closed_once_released() -> None:
    """Closing a pool cuts no request: the idle connections close now, the busy one
    when its answer has been read."""
    async with RawServer(keep_alive_ok) as server:
        pool = pool_for(server.port)
        idle, _, _ = await call(pool)
        busy = await resolved(pool.acquire(fresh=True))
        pool.close()
        await asyncio.sleep(0.05)
        assert idle.lost
        busy.start(head_only=False)
        busy.write(request_head("GET", "/x", pool.host_header, b"", False))
        assert (await busy.head(5)).status == 200
        assert busy.body is not None
        assert await asyncio.wait_for(busy.body.read_all(1 << 30), 5) == b"ok"
        assert not busy.lost
        pool.release(busy)
        await asyncio.sleep(0.05)
        assert busy.lost and not pool.idle


async def test_chunked_response_and_chunked_upload() -> None:
    received: list[bytes] = []

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()

    async with RawServer(chunked) as server:
        pool = pool_for(server.port)
        _, status, data = await call(pool, "POST", body=[b"abc", b"", b"defg"])
        assert (status, data) == (200, b"hello world")
        assert received[0].endswith(b"\r\n\r\nabcdefg")
        assert b"Transfer-Encoding: chunked" in received[0]
        pool.close()


async def test_informational_responses_are_skipped() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
        )
        await writer.drain()

    async with RawServer(early_hints) as server:
        pool = pool_for(server.port)
        _, status, data = await call(pool)
        assert (status, data) == (201, b"done")
        pool.close()


async def test_head_ends_at_the_headers_and_is_not_reused() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with RawServer(head) as server:
        pool = pool_for(server.port)
        conn, status, data = await call(pool, "HEAD")
        assert (status, data) == (200, b"")
        assert not pool.idle and not conn.reusable
        pool.close()


async def test_connection_refused_is_a_connect_error() -> None:
    pool = pool_for(free_port())
    with pytest.raises(UpstreamConnectError):
        await call(pool)


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # then the server hangs up
        b"",  # hangs up without a word
    ],
)
async def test_broken_answers_are_protocol_errors(answer: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with RawServer(broken) as server:
        pool = pool_for(server.port)
        with pytest.raises(UpstreamProtocolError):
            await call(pool)
        pool.close()


async def test_a_connection_closed_by_the_upstream_while_idle_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # keep-alive by default, then the server closes it anyway

    async with RawServer(once) as server:
        pool = pool_for(server.port)
        await call(pool)
        await asyncio.sleep(0.1)  # the close reaches the idle connection
        _, status, _ = await call(pool)
        assert status == 200
        assert server.connections == 2
        pool.close()


async def one_answer_per_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answers the first request with keep-alive, then drops the next one unanswered:
    what a reused connection looks like when the upstream timed it out meanwhile."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    await read_request(reader)


@pytest.fixture
async def flaky_upstream() -> AsyncIterator[RawServer]:
    async with RawServer(one_answer_per_connection) as server:
        yield server


@pytest.fixture
def config(config: dict[str, object], flaky_upstream: RawServer) -> dict[str, object]:
    upstreams = config["upstreams"]
    routes = config["routes"]
    assert isinstance(upstreams, dict) and isinstance(routes, list)
    upstreams["flaky"] = {"url": f"http://127.0.0.1:{flaky_upstream.port}", "timeout": 2}
    routes.append({"path": "/flaky/**", "auth": "none", "upstream": "flaky"})
    return config


async def test_a_reused_connection_that_dies_unanswered_is_retried_once(
    gw: Gateway, flaky_upstream: RawServer
) -> None:
    for _ in range(3):
        resp = await gw.client.get("/flaky/x")
        assert resp.status == 200
        assert await resp.read() == b"ok"
    # Each request after the first found its reused connection dead and got a fresh one.
    assert flaky_upstream.connections == 3  # A (answered, then died on reuse), B, C


async def test_a_body_is_never_sent_twice(gw: Gateway, flaky_upstream: RawServer) -> None:
    assert (await gw.client.get("/flaky/x")).status == 200
    resp = await gw.client.post("/flaky/x", data=b"payment")
    assert resp.status == 502  # not replayed: the upstream may have acted on it
    assert flaky_upstream.connections == 1
