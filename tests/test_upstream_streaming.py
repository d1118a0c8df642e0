"""Regressions for what a security review found: each test fails on the code
before the fix."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import Gateway
from test_upstream_client import RawServer, read_request


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


async def test_the_session_cookie_never_reaches_an_upstream(gw: Gateway) -> None:
    cookie = f"theirs=1; {gw.settings.session.cookie_name}=secret-session; other=2"
    echo = await (await gw.client.get("/public/echo/x", headers={"Cookie": cookie})).json()
    assert header(echo, "Cookie") == ["theirs=1; other=2"]
    only_ours = {"Cookie": f"{gw.settings.session.cookie_name}=secret-session"}
    echo = await (await gw.client.get("/public/echo/x", headers=only_ours)).json()
    assert header(echo, "Cookie") == []


@pytest.mark.parametrize(
    "path", ["/public/..;/admin/echo/x", "/public/.;x/admin/echo/x", "/public/%2e%2e;/x"]
)
async def test_dot_segments_with_parameters_are_refused(gw: Gateway, path: str) -> None:
    from yarl import URL

    resp = await gw.client.get(URL(path, encoded=True))
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_request"


async def test_login_next_with_control_characters_falls_back(gw: Gateway) -> None:
    await gw.user()
    page = await gw.client.get("/oauth/login", params={"next": "/dashboard/x\r\nSet-Cookie: a=b"})
    text = await page.text()
    assert 'name="next" value="/oauth/login"' in text


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


async def test_upstream_header_bytes_that_cannot_pass_unchanged_are_a_502(gw: Gateway) -> None:
    resp = await gw.client.get("/latin/x")
    assert resp.status == 502
    assert (await resp.json())["error"] == "bad_gateway"


async def test_a_code_is_refused_once_the_user_revoked_the_app(gw: Gateway) -> None:
    from oauth_helpers import authorization_code, oauth_error, pkce_pair, redeem

    await gw.user()
    zap = await gw.oauth_client()
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    grants = await gw.store.list_grants_page((await gw.org()).id, None, None, 10)
    assert len(grants) == 1
    await gw.store.revoke_grant(grants[0].id, time.time())
    await oauth_error(await redeem(gw, zap, code, pkce), 400, "invalid_grant")


async def test_refresh_stays_within_the_clients_current_scopes(gw: Gateway) -> None:
    from dataclasses import replace

    from oauth_helpers import issued_tokens, refreshed

    await gw.user()
    zap = await gw.oauth_client()
    tokens = await issued_tokens(gw, zap, scope="contacts:read contacts:write")
    await gw.store.update_client(replace(zap.client, allowed_scopes=("contacts:read",)))
    body = await refreshed(gw, zap, tokens["refresh_token"])
    assert body["scope"] == "contacts:read"
