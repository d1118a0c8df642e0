"""The proxy engine (gateway/http/engine.py) on real sockets: framing, keep-alive,
pipelining, and requests lent to aiohttp with the client's bytes unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from conftest import Gateway
from raw_http import HOST, RawResponse, parse_head

from gateway.http.connection import SMALL_BODY as FAST_BODY
from gateway.http.connection import Connection

TIMEOUT = 10.0


async def read_answer(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    """One response off a keep-alive connection: Content-Length, chunked or none."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers = parse_head(head)
    body = b""
    if method == "HEAD" or status in (204, 304):
        pass
    elif headers.get("Transfer-Encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    elif "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)


def request(method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes = b"") -> bytes:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    """One raw keep-alive connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, gw: Gateway) -> Conn:
        port = gw.client.server.port
        assert port is not None
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, method: str = "GET") -> RawResponse:
        return await asyncio.wait_for(read_answer(self.reader, method), TIMEOUT)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def conn(gw: Gateway) -> Any:
    c = await Conn.open(gw)
    yield c
    c.close()


def echo_of(resp: RawResponse) -> dict[str, Any]:
    assert resp.status == 200, resp.body
    data: dict[str, Any] = json.loads(resp.body)
    return data


async def test_pipelined_requests_are_answered_in_order_across_a_hand_over(
    gw: Gateway, conn: Conn, upstream_seen: list[str]
) -> None:
    """Four requests in one packet: two fast, one for an OAuth endpoint (aiohttp's), one
    more proxied call that aiohttp now serves from the bytes handed over."""
    await conn.send(
        request("GET", "/public/echo/one")
        + request("GET", "/public/echo/two?x=1")
        + request("GET", "/oauth/token")
        + request("GET", "/public/echo/three")
    )
    first, second, own, last = [await conn.answer() for _ in range(4)]
    assert echo_of(first)["path"] == "/echo/one"
    assert echo_of(second)["path"] == "/echo/two" and echo_of(second)["query"] == "x=1"
    assert own.status == 405 and json.loads(own.body)["error"] == "method_not_allowed"
    assert echo_of(last)["path"] == "/echo/three"
    assert upstream_seen == ["/echo/one", "/echo/two?x=1", "/echo/three"]


async def test_a_request_split_into_single_bytes_is_served(gw: Gateway, conn: Conn) -> None:
    body = b'{"a": 1}'
    data = request("POST", "/public/echo/split", {"Content-Type": "application/json"}, body)
    for i in range(len(data)):
        await conn.send(data[i : i + 1])
    echoed = echo_of(await conn.answer())
    assert echoed["method"] == "POST"
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("size", [FAST_BODY, FAST_BODY + 1])
async def test_bodies_at_and_over_the_fast_limit_arrive_intact(
    gw: Gateway, conn: Conn, size: int
) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await conn.send(request("PUT", "/public/echo/blob", body=body))
    echoed = echo_of(await conn.answer())
    assert echoed["body_length"] == size
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    # The connection still serves the next request.
    await conn.send(request("GET", "/public/echo/after"))
    assert echo_of(await conn.answer())["path"] == "/echo/after"


async def test_a_chunked_upload_after_fast_requests_reaches_the_upstream_unchanged(
    gw: Gateway, conn: Conn
) -> None:
    await conn.send(request("GET", "/public/echo/first"))
    assert echo_of(await conn.answer())["path"] == "/echo/first"
    pieces = [b"hello ", b"chunked ", b"world"]
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = (
        f"POST /public/echo/chunks HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await conn.send(head.encode() + chunked)
    echoed = echo_of(await conn.answer())
    assert echoed["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


async def test_refusals_and_successes_alternate_on_one_connection(gw: Gateway, conn: Conn) -> None:
    key = (await gw.mint(["contacts:read"])).secret
    for _ in range(3):
        await conn.send(request("GET", "/echo/scoped/x", {"X-API-Key": key}))
        refused = await conn.answer()
        assert refused.status == 403
        assert json.loads(refused.body)["error"] == "forbidden"
        assert "insufficient_scope" in refused.headers["WWW-Authenticate"]
        await conn.send(request("GET", "/echo/x", {"X-API-Key": "gwk_unknown"}))
        assert (await conn.answer()).status == 401
        await conn.send(request("GET", "/echo/ok", {"X-API-Key": key}))
        echoed = echo_of(await conn.answer())
        assert dict((k, v) for k, v in echoed["headers"])["X-Scopes"] == "contacts:read"


async def test_answers_carry_framing_date_and_request_id(gw: Gateway, conn: Conn) -> None:
    await conn.send(request("GET", "/public/echo/x"))
    resp = await conn.answer()
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(resp.body)
    assert resp.headers["Date"].endswith(" GMT")
    assert len(resp.headers["X-Request-Id"]) == 24
    assert "Connection" not in resp.headers  # HTTP/1.1 keep-alive is the default

    await conn.send(request("HEAD", "/public/echo/x"))
    head = await conn.answer("HEAD")
    assert head.status == 200 and head.body == b""

    await conn.send(request("GET", "/status/204"))
    empty = await conn.answer()
    assert empty.status == 204 and "Content-Length" not in empty.headers


async def test_a_streamed_answer_without_length_is_rechunked(gw: Gateway, conn: Conn) -> None:
    key = (await gw.mint(["contacts:read"])).secret
    n = 3 * 1024 * 1024
    await conn.send(request("GET", f"/bytes/{n}", {"X-API-Key": key}))
    resp = await conn.answer()
    assert resp.status == 200
    assert len(resp.body) == n
    # Still usable afterwards.
    await conn.send(request("GET", "/public/echo/next"))
    assert echo_of(await conn.answer())["path"] == "/echo/next"


async def test_connection_close_is_honoured(gw: Gateway, conn: Conn) -> None:
    await conn.send(request("GET", "/public/echo/x", {"Connection": "close"}))
    resp = await conn.answer()
    assert resp.status == 200
    assert resp.headers["Connection"] == "close"
    assert await conn.closed()


async def test_http_1_0_is_served_by_aiohttp(gw: Gateway, conn: Conn) -> None:
    await conn.send(f"GET /public/echo/old HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
    resp = await conn.answer()
    assert echo_of(resp)["path"] == "/echo/old"


async def test_a_half_closed_client_still_gets_its_answers(gw: Gateway, conn: Conn) -> None:
    await conn.send(request("GET", "/public/echo/a") + request("GET", "/public/echo/b"))
    conn.writer.write_eof()
    assert echo_of(await conn.answer())["path"] == "/echo/a"
    assert echo_of(await conn.answer())["path"] == "/echo/b"
    assert await conn.closed()


async def test_engine_requests_are_counted_and_logged(gw: Gateway, conn: Conn) -> None:
    key = (await gw.mint(["contacts:read"])).secret
    for _ in range(5):
        await conn.send(request("GET", "/contacts", {"X-API-Key": key, "X-Org-Id": "spoof"}))
        assert (await conn.answer()).status == 200
    assert gw.admin is not None
    metrics = await (await gw.admin.get("/metrics")).text()
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith("gateway_requests_total{")
        and 'route="/contacts"' in ln
        and 'status_class="2xx"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 5.0


async def test_pipelined_refusals_and_cached_calls_in_one_packet_keep_their_order(
    gw: Gateway, conn: Conn
) -> None:
    """Refusals are answered while the packet is read; proxied calls with a cached key go
    out from the protocol's callbacks; an unknown key waits for the store. Order holds."""
    key = (await gw.mint(["contacts:read"])).secret
    await conn.send(request("GET", "/echo/warm", {"X-API-Key": key}))  # caches the key
    assert echo_of(await conn.answer())["path"] == "/echo/warm"
    batch = [
        ("/echo/scoped/a", key, 403),
        ("/echo/one", key, 200),
        ("/echo/scoped/b", key, 403),
        ("/echo/x", "gwk_unknown", 401),
        ("/echo/two", key, 200),
        ("/nowhere", key, 404),
        ("/echo/three", key, 200),
    ]
    await conn.send(b"".join(request("GET", path, {"X-API-Key": k}) for path, k, _ in batch))
    for path, _, status in batch:
        answer = await conn.answer()
        assert answer.status == status, (path, answer.body)
        if status == 200:
            assert echo_of(answer)["path"] == path
        else:
            assert "error" in json.loads(answer.body)


async def test_shutdown_waits_for_a_call_through_its_store_lookup_and_upstream_call(
    gw: Gateway, conn: Conn
) -> None:
    """A key not yet cached is looked up in one task and relayed in another; a shutdown
    in between still lets the client have its answer."""
    key = (await gw.mint(["contacts:read"])).secret
    await conn.send(request("GET", "/slow?delay=0.3", {"X-API-Key": key}))
    server = gw.client.server.runner.server
    assert server is not None
    for _ in range(1000):  # until the request arrived and its key is being looked up
        fronts = [p for p in list(server.connections) if isinstance(p, Connection)]
        waiting = fronts[0].call if fronts else None
        if waiting is not None and waiting.task is not None:
            break
        await asyncio.sleep(0)
    assert waiting is not None and waiting.task is not None
    await fronts[0].shutdown(5.0)
    answer = await conn.answer()
    assert answer.status == 200
    assert json.loads(answer.body) == {"slept": 0.3}
    assert await conn.closed()


async def test_a_lent_request_asking_to_close_gets_its_connection_closed(
    gw: Gateway, conn: Conn
) -> None:
    """aiohttp answers the gateway's own endpoints; the engine, which owns the
    connection, honours the client's Connection: close after that answer."""
    await conn.send(request("GET", "/oauth/token", {"Connection": "close"}))
    answer = await conn.answer()
    assert answer.status == 405
    assert await conn.closed()
