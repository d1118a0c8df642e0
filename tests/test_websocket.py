"""WebSockets through the gateway: the handshake judged like any call on its route,
frames relayed both ways unchanged, and sockets closed when their credential is
revoked or expires, or when they fall silent. A real client (aiohttp's) against a
real WebSocket upstream (upstream_example's /ws/echo) on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
import pytest
from conftest import Gateway
from nodes import metric, readme_block
from oauth_helpers import with_config

from gateway.accounts.api_keys import revoke_api_key

ROUTES = [
    {"path": "/ws/**", "upstream": "main", "websocket": True, "scopes": ["contacts:read"]},
    {"path": "/echo/**", "upstream": "main"},
]
SOCKETS = with_config("websocket routes", routes=ROUTES)
IDLE = with_config("idle sockets", routes=ROUTES, proxy={"websocket_idle_timeout": 0.5})
BIG = 16 * 1024 * 1024


def hello_headers(message: aiohttp.WSMessage) -> dict[str, str]:
    """The headers the upstream's handshake saw, from its first message."""
    assert message.type == aiohttp.WSMsgType.TEXT
    return {k.lower(): v for k, v in json.loads(message.data)["headers"]}


async def scraped(gw: Gateway, name: str) -> float:
    assert gw.admin is not None
    return metric(await (await gw.admin.get("/metrics")).text(), name)


@SOCKETS
async def test_frames_are_relayed_both_ways_with_the_identity_injected(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    ws = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret,
                                                         "X-Org-Id": "spoofed"})  # fmt: skip
    seen = hello_headers(await ws.receive())
    assert seen["x-org-id"] == key.record.org_id and seen["x-scopes"] == "contacts:read"
    assert seen["x-auth-method"] == "api_key" and seen["x-request-id"]
    assert "x-api-key" not in seen
    await ws.send_str("héllo")
    assert (await ws.receive()).data == "héllo"
    await ws.send_bytes(b"\x00\xffbinary")
    message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.BINARY and message.data == b"\x00\xffbinary"
    assert await scraped(gw, "gateway_websockets_open") == 1
    await ws.close()
    assert ws.close_code == 1000
    for _ in range(50):
        if await scraped(gw, "gateway_websockets_open") == 0:
            break
        await asyncio.sleep(0.05)
    assert await scraped(gw, "gateway_websockets_open") == 0
    # The handshake is one request, counted as a 1xx.
    assert gw.admin is not None
    text = await (await gw.admin.get("/metrics")).text()
    assert metric(text, "gateway_requests_total", route="/ws/**", status_class="1xx") == 1


@SOCKETS
async def test_a_10_mib_message_and_a_ping_go_through(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    ws = await gw.client.ws_connect(
        "/ws/echo", headers={"X-API-Key": key.secret}, max_msg_size=BIG, autoping=False
    )
    await ws.receive()  # the hello
    big = os.urandom(10 * 1024 * 1024)
    await ws.send_bytes(big)
    echoed = await ws.receive(timeout=30)
    assert echoed.type == aiohttp.WSMsgType.BINARY and echoed.data == big
    await ws.ping(b"are you there")
    pong = await ws.receive(timeout=5)
    assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"are you there"
    await ws.close()


@SOCKETS
async def test_the_upstream_may_close_with_its_own_code(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    ws = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret})
    await ws.receive()
    await ws.send_str("close 4000")
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4000
    assert message.extra == "asked to"


@SOCKETS
async def test_a_handshake_without_credential_or_scope_is_refused_before_any_upgrade(
    gw: Gateway, upstream_seen: list[str]
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.client.ws_connect("/ws/echo")
    assert refused.value.status == 401
    assert refused.value.headers is not None
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    key = await gw.mint(["contacts:write"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret})
    assert refused.value.status == 403
    assert "/ws/echo" not in upstream_seen


@SOCKETS
async def test_an_upgrade_elsewhere_is_refused_and_never_forwarded(
    gw: Gateway, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "X-API-Key": key.secret,
    }
    for path in ("/echo/upgrade", "/oauth/token"):
        resp = await gw.client.get(path, headers=upgrade)
        assert resp.status == 400, path
        assert (await resp.json())["error"] == "upgrade_refused"
        assert resp.headers["Connection"] == "close"  # what follows is no request to read
    resp = await gw.client.post("/ws/echo", headers=upgrade)
    assert resp.status in (400, 405)
    resp = await gw.client.get("/ws/echo", headers={**upgrade, "Upgrade": "h2c"})
    assert resp.status == 400 and (await resp.json())["error"] == "upgrade_refused"
    assert not [p for p in upstream_seen if "upgrade" in p or p.startswith("/ws")]
    # An Upgrade field that Connection does not name is no upgrade (RFC 9110 §7.8).
    resp = await gw.client.get("/echo/plain", headers={"Upgrade": "websocket",
                                                       "X-API-Key": key.secret})  # fmt: skip
    assert resp.status == 200


async def closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> Any:
    """The close the gateway sends, and how long it took to come."""
    started = time.monotonic()
    while True:
        message = await ws.receive(timeout=seconds + 1)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return message, time.monotonic() - started


@SOCKETS
async def test_a_revoked_credential_closes_its_sockets_within_a_second(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    other = await gw.mint(["contacts:read"], name="other")
    ws = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret})
    kept = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": other.secret})
    await ws.receive()
    await kept.receive()
    await revoke_api_key(gw.store, key.record.id)
    message, took = await closed_within(ws, 1.0)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4401
    assert took < 1.0
    await kept.send_str("still here")  # another credential's socket is untouched
    assert (await kept.receive(timeout=2)).data == "still here"
    await kept.close()


@SOCKETS
async def test_an_expiring_credential_closes_its_socket(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"], ttl=2)
    ws = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret})
    await ws.receive()
    assert key.record.expires_at is not None
    message, _ = await closed_within(ws, 4.0)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4401
    assert time.time() - key.record.expires_at < 1.0


@IDLE
async def test_a_silent_socket_is_closed_after_the_idle_timeout(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    ws = await gw.client.ws_connect("/ws/echo", headers={"X-API-Key": key.secret}, autoping=False)
    await ws.receive()
    message, took = await closed_within(ws, 2.0)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    assert 0.3 < took < 1.5


@with_config("readme routes", routes=[{"path": "/ws/echo", "scopes": ["contacts:read"],
                                      "upstream": "main", "websocket": True}])  # fmt: skip
async def test_the_readme_client_runs_as_shown(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    script = readme_block("## WebSockets", "python")
    script = script.replace("127.0.0.1:8080", gw.base_url.removeprefix("http://"))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env={**os.environ, "KEY": key.secret},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == 0, err.decode()
    hello, echoed = out.decode().splitlines()
    assert "'X-Org-Id'" in hello and echoed == "hello"
