"""What a hostile client can send: spoofed identity headers, Connection tricks,
confusing paths, odd credentials and odd bytes. Each case is checked against what
the upstream actually received (its ``/echo`` answer) or against the gateway's
refusal, and an upstream that records every request proves what was never
forwarded.

Paths and non-ASCII bytes go over a raw socket (``raw_request``) so that no
client library normalizes or refuses them before the gateway sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from multidict import CIMultiDict

from conftest import AiohttpServer, Gateway
from gateway import crypto
from upstream_example import create_app as create_upstream

UNAUTHORIZED = {"error": "unauthorized", "message": "Invalid or unknown access token."}
NO_CREDENTIAL_CHALLENGE = 'Bearer realm="gateway"'
BAD_CREDENTIAL_CHALLENGE = 'Bearer realm="gateway", error="invalid_token"'
HOST = "gateway.test"
PEER = "127.0.0.1"  # the test client's address as the gateway sees it
INJECTED = (
    "X-Org-Id",
    "X-Scopes",
    "X-Auth-Method",
    "X-Credential-Id",
    "X-Client-Id",
    "X-User-Id",
    "X-Request-Id",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
)
IDENTITY = ("X-Org-Id", "X-Scopes", "X-Auth-Method", "X-Credential-Id", "X-Client-Id", "X-User-Id")
CREDENTIALS = ("X-API-Key", "Authorization")
SPOOF = "spoofed"
CONTROL = "X_Not_Identity"


# --- a recording upstream ---------------------------------------------------


@pytest.fixture
def upstream_seen() -> list[str]:
    """Every raw path the upstream answered, in order."""
    return []


@pytest.fixture
async def upstream_url(aiohttp_server: AiohttpServer, upstream_seen: list[str]) -> str:
    """The real upstream_example, recording what reaches it (overrides conftest's)."""
    app = create_upstream()

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        upstream_seen.append(request.raw_path)

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


# --- raw HTTP/1.1 -----------------------------------------------------------

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
    port: int,
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
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    else:
        body = await reader.read()
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


# --- reading answers --------------------------------------------------------


def canonical(name: str) -> str:
    """How a WSGI/CGI backend sees a header name: case-folded, '_' read as '-'."""
    return name.lower().replace("_", "-")


def received(echo: dict[str, Any], name: str) -> list[str]:
    """Values of every header the upstream got that a backend would read as ``name``."""
    return [v for n, v in echo["headers"] if canonical(n) == canonical(name)]


async def echoed(resp: ClientResponse) -> dict[str, Any]:
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert "headers" in body, body
    return body


def raw_echoed(resp: RawResponse) -> dict[str, Any]:
    assert resp.status == 200, resp.body
    body: dict[str, Any] = resp.json()
    assert "headers" in body, body
    return body


def assert_raw_error(resp: RawResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, resp.body
    assert resp.headers["Content-Type"].startswith("application/json"), resp.body
    body: dict[str, Any] = resp.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


async def assert_error(resp: ClientResponse, status: int, body: dict[str, Any] | str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    data = await resp.json()
    if isinstance(body, str):
        assert data["error"] == body
        assert isinstance(data["message"], str) and data["message"]
    else:
        assert data == body


def spellings(name: str) -> list[str]:
    """The ways a client may spell one header name so some backend reads it as that name."""
    variants = (name, name.lower(), name.upper(), name.replace("-", "_"), name.lower().replace("-", "_"))
    return list(dict.fromkeys(variants))


def spoofed(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every spelling of every name, a second copy of each, and a control header
    (underscored, so its arrival shows such names do get through otherwise)."""
    headers = [(spelling, SPOOF) for name in names for spelling in spellings(name)]
    return [*headers, *((name, f"{SPOOF}-again") for name in names), (CONTROL, "kept")]


def assert_no_spoofed_value(echo: dict[str, Any]) -> None:
    leaked = [(n, v) for n, v in echo["headers"] if SPOOF in v]
    assert leaked == [], leaked


# --- identity headers -------------------------------------------------------


async def test_client_identity_headers_are_replaced_by_the_gateways(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read", "products:read"])
    headers = [("X-API-Key", key.secret), ("Host", HOST), *spoofed(INJECTED)]
    resp = await gw.client.get("/echo/x", headers=CIMultiDict(headers))
    echo = await echoed(resp)

    assert_no_spoofed_value(echo)
    assert received(echo, CONTROL) == ["kept"]
    expected = {
        "X-Org-Id": [key.record.org_id],
        "X-Scopes": ["contacts:read products:read"],
        "X-Auth-Method": ["api_key"],
        "X-Credential-Id": [key.record.id],
        "X-Client-Id": [],
        "X-User-Id": [],
        "X-Request-Id": [resp.headers["X-Request-Id"]],
        "X-Forwarded-For": [PEER],
        "X-Forwarded-Proto": ["http"],
        "X-Forwarded-Host": [HOST],
    }
    assert {name: received(echo, name) for name in INJECTED} == expected


async def test_spoofed_headers_are_stripped_on_a_public_route_and_no_identity_injected(
    gw: Gateway,
) -> None:
    # A valid key on a public route authenticates nothing: the upstream learns no identity.
    key = await gw.mint(["admin:all"])
    headers = [("X-API-Key", key.secret), *spoofed(INJECTED)]
    resp = await gw.client.get("/public/echo/x", headers=CIMultiDict(headers))
    echo = await echoed(resp)

    assert echo["path"] == "/echo/x"
    assert_no_spoofed_value(echo)
    assert received(echo, CONTROL) == ["kept"]
    for name in IDENTITY:
        assert received(echo, name) == [], name
    assert received(echo, "X-Request-Id") == [resp.headers["X-Request-Id"]]
    assert received(echo, "X-Forwarded-For") == [PEER]


@pytest.mark.parametrize("via", ["X-API-Key", "Authorization"])
async def test_credentials_never_reach_the_upstream(gw: Gateway, via: str) -> None:
    key = await gw.mint(["contacts:read"])
    credential = key.secret if via == "X-API-Key" else f"Bearer {key.secret}"
    # Underscore spellings are not read as credentials, but a backend would read them.
    others = [(s, SPOOF) for name in CREDENTIALS for s in spellings(name) if "_" in s]
    resp = await gw.client.get("/echo/x", headers=CIMultiDict([(via, credential), *others]))
    echo = await echoed(resp)

    assert received(echo, "X-Org-Id") == [key.record.org_id]
    for name in CREDENTIALS:
        assert received(echo, name) == [], name
    assert_no_spoofed_value(echo)


async def test_credentials_are_stripped_on_a_public_route(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    headers = [("X-API-Key", key.secret), ("Authorization", "Basic dXNlcjpwYXNz")]
    echo = await echoed(await gw.client.get("/public/echo/x", headers=CIMultiDict(headers)))
    for name in CREDENTIALS:
        assert received(echo, name) == [], name


# --- Connection and hop-by-hop ----------------------------------------------


@pytest.mark.parametrize(
    "connection",
    [
        "X-Org-Id, X-Scopes",
        "close, x_org_id",
        "X-ORG-ID,X-Scopes,X-Auth-Method,X-Credential-Id,X-Request-Id,X-Forwarded-For",
    ],
)
async def test_connection_cannot_remove_injected_headers(gw: Gateway, connection: str) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await raw_request(
        gw.client.server.port,
        "GET",
        "/echo/x",
        [("X-API-Key", key.secret), ("Connection", connection)],
    )
    echo = raw_echoed(resp)
    assert received(echo, "X-Org-Id") == [key.record.org_id]
    assert received(echo, "X-Scopes") == ["contacts:read"]
    assert received(echo, "X-Auth-Method") == ["api_key"]
    assert received(echo, "X-Credential-Id") == [key.record.id]
    assert received(echo, "X-Request-Id") == [resp.headers["X-Request-Id"]]
    assert received(echo, "X-Forwarded-For") == [PEER]
    assert received(echo, "Connection") == []


@pytest.mark.parametrize("listed", ["X-Custom", "x-custom", "X_CUSTOM", "keep-alive, X-Custom"])
async def test_headers_named_in_connection_are_not_forwarded(gw: Gateway, listed: str) -> None:
    headers = [("Connection", listed), ("X-Custom", "1"), ("X-Kept", "1")]
    resp = await raw_request(gw.client.server.port, "GET", "/public/echo/x", headers)
    echo = raw_echoed(resp)
    assert received(echo, "X-Custom") == []
    assert received(echo, "X-Kept") == ["1"]


async def test_hop_by_hop_headers_are_not_forwarded(gw: Gateway) -> None:
    hop_by_hop = [
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
    ]
    resp = await raw_request(
        gw.client.server.port, "GET", "/public/echo/x", [*hop_by_hop, ("X-Kept", "1")]
    )
    echo = raw_echoed(resp)
    for name, _ in hop_by_hop:
        assert received(echo, name) == [], name
    assert received(echo, "X-Kept") == ["1"]


# --- X-Forwarded-* ------------------------------------------------------------

CLIENT_FORWARDING = [
    ("X-Forwarded-For", "203.0.113.9, 198.51.100.2"),
    ("X-Forwarded-For", "192.0.2.1"),
    ("X_Forwarded_For", "10.9.9.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "api.example.com"),
    ("Forwarded", "for=10.0.0.1"),
    ("X-Real-IP", "10.0.0.2"),
]


async def test_forwarded_for_from_an_untrusted_peer_is_replaced(gw: Gateway) -> None:
    headers = [("Host", HOST), *CLIENT_FORWARDING]
    echo = await echoed(await gw.client.get("/public/echo/x", headers=CIMultiDict(headers)))
    assert received(echo, "X-Forwarded-For") == [PEER]
    assert received(echo, "X-Forwarded-Proto") == ["http"]
    assert received(echo, "X-Forwarded-Host") == [HOST]
    assert received(echo, "Forwarded") == []
    assert received(echo, "X-Real-IP") == []


@pytest.fixture
def trust_loopback(config: dict[str, Any]) -> None:
    config["proxy"] = {"trusted_proxies": [f"{PEER}/32"]}


async def test_forwarded_for_from_a_trusted_proxy_is_appended_to(
    trust_loopback: None, gw: Gateway
) -> None:
    headers = [("Host", HOST), *CLIENT_FORWARDING]
    echo = await echoed(await gw.client.get("/public/echo/x", headers=CIMultiDict(headers)))
    # Both X-Forwarded-For lines count, in order; the underscore spelling does not.
    assert received(echo, "X-Forwarded-For") == [
        f"203.0.113.9, 198.51.100.2, 192.0.2.1, {PEER}"
    ]
    assert received(echo, "X-Forwarded-Proto") == ["https"]
    assert received(echo, "X-Forwarded-Host") == ["api.example.com"]
    assert received(echo, "Forwarded") == []
    assert received(echo, "X-Real-IP") == []
