"""The public listener against clients that do not play by the rules: request lines
of other HTTP versions, bare-LF line ends, heads trickled in, heads cut short.
Each is answered (or closed) at once by the engine and never forwarded."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from conftest import Gateway
from raw_http import parse_head

ANSWER_WITHIN = 3.0  # seconds: far below the 20 s a bare-LF request used to hang


async def exchange(gw: Gateway, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the gateway sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), ANSWER_WITHIN)
    finally:
        writer.close()


def error_of(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, headers = parse_head(head + b"\r\n\r\n")
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Connection"] == "close"
    return status, json.loads(body)["error"]


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        (b"GET /public/echo/x", 505, "http_version_not_supported"),  # HTTP/0.9 style
        (b"GET /public/echo/x HTTP/0.9", 505, "http_version_not_supported"),
        (b"GET /public/echo/x HTTP/1.2", 505, "http_version_not_supported"),
        (b"GET /public/echo/x HTTP/2.0", 505, "http_version_not_supported"),
        (b"GET /public/echo/x HTTPS/1.1", 400, "bad_request"),
    ],
)
async def test_request_lines_of_other_versions_are_refused_and_never_forwarded(
    gw: Gateway, upstream_seen: list[str], request_line: bytes, status: int, code: str
) -> None:
    answer = await exchange(gw, request_line + b"\r\nHost: a\r\n\r\n")
    assert error_of(answer) == (status, code)
    assert upstream_seen == []


@pytest.mark.parametrize(
    "data",
    [
        b"GET /public/echo/x HTTP/1.1\nHost: a\n\n",
        b"GET /public/echo/x HTTP/1.1\r\nHost: a\n\r\n",
        b"GET /public/echo/x HTTP/1.1\nHost: a\r\n\r\n",
    ],
)
async def test_bare_lf_line_ends_are_a_400_at_once(
    gw: Gateway, upstream_seen: list[str], data: bytes
) -> None:
    started = time.monotonic()
    assert error_of(await exchange(gw, data)) == (400, "bad_request")
    assert time.monotonic() - started < ANSWER_WITHIN
    assert upstream_seen == []


@pytest.mark.parametrize("config_patch", [{"proxy": {"header_timeout": 1}}])
async def test_a_head_trickled_in_is_timed_out_whatever_the_byte_rate(
    gw: Gateway, upstream_seen: list[str], config_patch: dict[str, Any]
) -> None:
    """One byte every 0.1 s keeps any idle timer happy; the head's deadline is total."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.server.port)
    started = time.monotonic()
    received = b""
    for byte in b"GET /public/echo/x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100:
        writer.write(bytes([byte]))
        await writer.drain()
        try:
            received = await asyncio.wait_for(reader.read(65536), 0.1)
        except TimeoutError:
            continue
        break
    writer.close()
    assert error_of(received) == (408, "request_timeout")
    assert 0.9 < time.monotonic() - started < 2.5
    assert upstream_seen == []


def close_wait(port: int) -> int:
    """Sockets of ours on ``port`` whose peer has closed but we have not (CLOSE-WAIT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port and state == "08"
    return count


async def test_connections_whose_client_left_mid_head_are_closed(gw: Gateway) -> None:
    """Part of a head, then the client closes: the gateway closes too (no CLOSE-WAIT
    left behind to exhaust the file descriptors), and still serves everyone else."""
    port = gw.client.server.port
    assert port is not None
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", gw.client.server.port)
        writer.write(b"GET /public/ech")
        await writer.drain()
        writer.close()
    deadline = time.monotonic() + ANSWER_WITHIN
    while left := close_wait(port):
        assert time.monotonic() < deadline, f"{left} connections left in CLOSE-WAIT"
        await asyncio.sleep(0.05)
    assert (await gw.client.get("/public/echo/after")).status == 200


@pytest.mark.parametrize("config_patch", [{"proxy": {"max_connections": 5}}])
async def test_at_the_connection_cap_silent_clients_give_way_to_well_behaved_ones(
    gw: Gateway, config_patch: dict[str, Any]
) -> None:
    """Five clients hold every connection a worker allows, sending half a head and then
    nothing; a new client is served all the same, the oldest silent one is closed, and
    the admin listener answers throughout."""
    port = gw.client.server.port
    silent = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /public/echo/x HTTP/1.1\r\nHost: a\r\n")
        await writer.drain()
        silent.append((reader, writer))
    await asyncio.sleep(0.1)
    answer = await exchange(
        gw, b"GET /public/echo/y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert await asyncio.wait_for(silent[0][0].read(), ANSWER_WITHIN) == b""  # given way
    assert gw.admin is not None
    assert (await gw.admin.get("/healthz")).status == 200
    for _, writer in silent:
        writer.close()
