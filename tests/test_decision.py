"""The decision endpoint, asked as nginx, Traefik and Envoy ask: the original request
is judged by the same pipeline as a proxied call, and never forwarded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import ClientResponse
from conftest import Gateway
from oauth_helpers import with_config

DECIDE = "/_gateway/decide"
TRUSTED = {"decision": {"enabled": True}, "proxy": {"trusted_proxies": ["127.0.0.1/32"]}}
IDENTITY = ("X-Org-Id", "X-Scopes", "X-Auth-Method", "X-Credential-Id", "X-Request-Id")


def nginx(method: str, uri: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri}


def traefik(method: str, uri: str) -> dict[str, str]:
    return {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri,
            "X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https"}  # fmt: skip


async def decide(gw: Gateway, headers: dict[str, str], path: str = DECIDE) -> ClientResponse:
    resp = await gw.client.get(path, headers=headers)
    await resp.read()
    return resp


async def refused(resp: ClientResponse, status: int, error: str, real: int | None = None) -> None:
    """A refusal: the status the asking proxy gets, and the real one in its fields."""
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert body["error"] == error
    assert resp.headers["X-Gateway-Status"] == str(real or status)
    assert json.loads(resp.headers["X-Gateway-Error"]) == body


@with_config(**TRUSTED)
@pytest.mark.parametrize("convention", [nginx, traefik], ids=["nginx", "traefik"])
async def test_an_allowed_request_is_200_with_the_identity_and_no_body(
    gw: Gateway, convention: Any
) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await decide(gw, {"X-API-Key": key.secret, **convention("GET", "/contacts?page=2")})
    assert resp.status == 200
    assert await resp.read() == b""
    assert resp.headers["X-Org-Id"] == (await gw.org()).id
    assert resp.headers["X-Scopes"] == "contacts:read"
    assert resp.headers["X-Auth-Method"] == "api_key"
    assert resp.headers["X-Credential-Id"] == key.record.id
    assert all(name in resp.headers for name in IDENTITY)


@with_config(**TRUSTED)
async def test_refusals_are_those_of_a_proxied_call(gw: Gateway) -> None:
    reader = await gw.mint(["contacts:read"])
    key = {"X-API-Key": reader.secret}
    # No credential: 401 with WWW-Authenticate, for every convention.
    resp = await decide(gw, nginx("GET", "/contacts"))
    await refused(resp, 401, "unauthorized")
    assert "WWW-Authenticate" in resp.headers
    # A scope the key lacks: 403.
    await refused(await decide(gw, {**key, **nginx("POST", "/contacts")}), 403, "forbidden")
    # No route, a method no route takes: nginx gets them as 403, Traefik as they are.
    await refused(await decide(gw, {**key, **nginx("GET", "/nowhere")}), 403, "not_found", 404)
    await refused(await decide(gw, {**key, **traefik("GET", "/nowhere")}), 404, "not_found")
    resp = await decide(gw, {**key, **traefik("PUT", "/contacts")})
    await refused(resp, 405, "method_not_allowed")
    # A path that cannot be normalized: 400.
    resp = await decide(gw, {**key, **traefik("GET", "/contacts/%2e%2e/admin")})
    await refused(resp, 400, "bad_request")


@with_config(**TRUSTED)
async def test_envoy_asks_with_the_original_path_below_the_decision_path(gw: Gateway) -> None:
    key = {"X-API-Key": (await gw.mint(["contacts:read"])).secret}
    resp = await decide(gw, key, DECIDE + "/contacts?page=2")
    assert resp.status == 200 and resp.headers["X-Scopes"] == "contacts:read"
    resp = await gw.client.post(DECIDE + "/contacts", headers=key)
    await refused(resp, 403, "forbidden")
    await refused(await decide(gw, key, DECIDE + "/nowhere"), 404, "not_found")


@with_config(decision={"enabled": True})
async def test_from_an_untrusted_peer_the_original_is_ignored(gw: Gateway) -> None:
    """Judged as a request for the decision path itself, which no route matches."""
    key = {"X-API-Key": (await gw.mint(["contacts:read"])).secret}
    await refused(await decide(gw, {**key, **traefik("GET", "/contacts")}), 404, "not_found")
    await refused(await decide(gw, {**key, **nginx("GET", "/contacts")}), 404, "not_found")


async def test_without_the_setting_there_is_no_decision_endpoint(gw: Gateway) -> None:
    key = {"X-API-Key": (await gw.mint(["contacts:read"])).secret}
    resp = await decide(gw, {**key, **nginx("GET", "/contacts")})
    assert resp.status == 404 and "X-Gateway-Status" not in resp.headers


@with_config(**TRUSTED)
async def test_decisions_count_against_rate_limits(gw: Gateway) -> None:
    admin = {"X-API-Key": (await gw.mint(["gateway:admin"], name="admin")).secret}
    created = await gw.client.post(
        gw.settings.management.prefix + "/keys",
        headers=admin,
        json={"name": "limited", "scopes": ["contacts:read"], "limits": {"rate_limit": 2}},
    )
    key = {"X-API-Key": (await created.json())["key"]}
    assert [(await decide(gw, {**key, **nginx("GET", "/contacts")})).status for _ in range(2)] == [
        200,
        200,
    ]
    resp = await decide(gw, {**key, **nginx("GET", "/contacts")})
    await refused(resp, 403, "rate_limited", 429)
    assert "Retry-After" in resp.headers
    await refused(await decide(gw, {**key, **traefik("GET", "/contacts")}), 429, "rate_limited")


@with_config(
    **TRUSTED,
    routes=[{"path": "/paid/**", "upstream": "main", "cost": 3, "scopes": ["contacts:read"]}],
)
async def test_an_allowed_decision_on_a_metered_route_is_charged_for_good(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    org = await gw.org()
    await gw.store.wallet_credit(org.id, 5, None, 0)
    resp = await decide(gw, {"X-API-Key": key.secret, **traefik("POST", "/paid/import")})
    assert resp.status == 200
    resp = await decide(gw, {"X-API-Key": key.secret, **traefik("POST", "/paid/import")})
    await refused(resp, 402, "payment_required")
    assert await gw.store.wallet_balance(org.id) == 2
    rows = gw.db_rows("SELECT kind, settled FROM wallet_transactions ORDER BY seq")
    assert rows == [("credit", 0), ("debit", 1)]  # settled: never refunded
