"""Test mode beside live: a test credential reaches its upstream's test target only,
a live one the live target only, and the upstream learns which in X-Environment.
Two real upstream_example processes on loopback, told apart by the Host the
gateway sends each."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import Gateway
from oauth_helpers import token_request

from gateway.accounts import api_keys
from gateway.oauth.clients import register_client
from upstream_example.app import create_app as create_upstream


@pytest.fixture
async def test_target(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_upstream(), host="127.0.0.1")
    return server


@pytest.fixture
def config(config: dict[str, Any], test_target: TestServer) -> dict[str, Any]:
    config["upstreams"]["main"]["test_url"] = f"http://127.0.0.1:{test_target.port}"
    config["routes"] += [
        {
            "path": "/sandbox/echo/**",
            "upstream": "main",
            "environments": ["test"],
            "strip_prefix": "/sandbox",
        },
        {"path": "/paid/echo/**", "upstream": "main", "cost": 3, "strip_prefix": "/paid"},
    ]
    config["decision"] = {"enabled": True}
    config["proxy"] = {"trusted_proxies": ["127.0.0.1/32"]}
    return config


async def echoed(gw: Gateway, path: str, headers: dict[str, str]) -> dict[str, str]:
    resp = await gw.client.get(path, headers=headers)
    body = await resp.json()
    assert resp.status == 200, body
    return {k.lower(): v for k, v in body["headers"]}


async def refusal(gw: Gateway, path: str, headers: dict[str, str]) -> tuple[int, str]:
    resp = await gw.client.get(path, headers=headers)
    return resp.status, (await resp.json())["error"]


async def test_each_environment_reaches_its_own_target_only(
    gw: Gateway, test_target: TestServer, upstream_url: str
) -> None:
    live = await gw.mint(["contacts:read"])
    org = await gw.org()
    test = await api_keys.issue_api_key(gw.store, org, name="sandbox", scopes=["contacts:read"],
                                        catalog=gw.settings.scopes, environment="test")  # fmt: skip
    assert live.secret.startswith("gwk_live_") and test.secret.startswith("gwk_test_")
    assert test.record.prefix.startswith("gwk_test_")
    spoof = {"X-Environment": "live"}
    seen = await echoed(gw, "/echo/x", {"X-API-Key": test.secret, **spoof})
    assert seen["host"] == f"127.0.0.1:{test_target.port}"
    assert seen["x-environment"] == "test"
    seen = await echoed(gw, "/echo/x", {"X-API-Key": live.secret, "X-Environment": "test"})
    assert seen["host"] == upstream_url.removeprefix("http://")
    assert seen["x-environment"] == "live"
    # A route for test mode only, and one whose upstream has no test target.
    assert (await echoed(gw, "/sandbox/echo/x", {"X-API-Key": test.secret}))[
        "x-environment"
    ] == "test"
    assert await refusal(gw, "/sandbox/echo/x", {"X-API-Key": live.secret}) == (
        403, "live_mode_unavailable")  # fmt: skip
    assert await refusal(gw, "/down/x", {"X-API-Key": test.secret}) == (
        403, "test_mode_unavailable")  # fmt: skip


async def test_a_test_client_s_tokens_are_test_credentials(
    gw: Gateway, test_target: TestServer
) -> None:
    await gw.org()
    client = await register_client(
        gw.store, name="sandbox app", redirect_uris=(), scopes=["contacts:read"],
        catalog=gw.settings.scopes, grant_types=("client_credentials",), org="acme",
        environment="test",
    )  # fmt: skip
    resp = await token_request(gw, client, grant_type="client_credentials")
    token = (await resp.json())["access_token"]
    seen = await echoed(gw, "/echo/x", {"Authorization": f"Bearer {token}"})
    assert seen["x-environment"] == "test" and seen["x-auth-method"] == "oauth"
    assert seen["host"] == f"127.0.0.1:{test_target.port}"


async def test_the_decision_endpoint_names_the_environment(gw: Gateway) -> None:
    org = await gw.org()
    test = await api_keys.issue_api_key(gw.store, org, name="sandbox", scopes=["contacts:read"],
                                        catalog=gw.settings.scopes, environment="test")  # fmt: skip
    asked = {"X-Original-Method": "GET", "X-Original-URI": "/echo/x"}
    resp = await gw.client.get("/_gateway/decide", headers={"X-API-Key": test.secret, **asked})
    assert resp.status == 200 and resp.headers["X-Environment"] == "test"
    resp = await gw.client.get("/_gateway/decide",
                               headers={"X-API-Key": test.secret, **asked,
                                        "X-Original-URI": "/down/x"})  # fmt: skip
    assert resp.status == 403
    assert resp.headers["X-Gateway-Status"] == "403"


async def test_the_management_api_creates_and_filters_by_environment(gw: Gateway) -> None:
    admin = await gw.mint(["gateway:admin"], name="admin")
    headers = {"X-API-Key": admin.secret}
    prefix = gw.settings.management.prefix
    resp = await gw.client.post(f"{prefix}/keys", headers=headers,
                                json={"name": "t", "scopes": ["contacts:read"],
                                      "environment": "test"})  # fmt: skip
    created = await resp.json()
    assert resp.status == 201, created
    assert created["environment"] == "test" and created["key"].startswith("gwk_test_")
    listed = await (await gw.client.get(f"{prefix}/keys?environment=test", headers=headers)).json()
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    listed = await (await gw.client.get(f"{prefix}/keys?environment=live", headers=headers)).json()
    assert {k["environment"] for k in listed["data"]} == {"live"}
    assert admin.record.id in [k["id"] for k in listed["data"]]
    resp = await gw.client.get(f"{prefix}/keys?environment=staging", headers=headers)
    assert resp.status == 400


async def test_test_calls_pay_from_the_test_wallet_and_never_the_live_one(
    gw: Gateway, test_target: TestServer
) -> None:
    org = await gw.org()
    admin = {"X-API-Key": (await gw.mint(["gateway:admin"], name="admin")).secret}
    test = await api_keys.issue_api_key(gw.store, org, name="sandbox", scopes=["contacts:read"],
                                        catalog=gw.settings.scopes, environment="test")  # fmt: skip
    prefix = gw.settings.management.prefix
    await gw.store.wallet_credit(org.id, 100, "live money", 0.0)
    assert await refusal(gw, "/paid/echo/x", {"X-API-Key": test.secret}) == (
        402, "payment_required")  # fmt: skip
    resp = await gw.client.post(f"{prefix}/wallet/test/credit", headers=admin,
                                json={"amount": 10, "note": "trying it out"})  # fmt: skip
    assert resp.status == 200
    assert await resp.json() == {"org_id": org.id, "environment": "test", "balance": 10}
    seen = await echoed(gw, "/paid/echo/x", {"X-API-Key": test.secret})
    assert seen["host"] == f"127.0.0.1:{test_target.port}"

    async def wallet(environment: str) -> dict[str, Any]:
        resp = await gw.client.get(f"{prefix}/wallet?environment={environment}", headers=admin)
        return dict(await resp.json())

    assert (await wallet("test"))["balance"] == 7
    assert (await wallet("live"))["balance"] == 100
    resp = await gw.client.get(f"{prefix}/wallet/transactions?environment=test", headers=admin)
    kinds = [(e["kind"], e["amount"]) for e in (await resp.json())["data"]]
    assert kinds == [("debit", -3), ("credit", 10)]
    resp = await gw.client.get(f"{prefix}/wallet/transactions", headers=admin)
    assert [(e["kind"], e["amount"]) for e in (await resp.json())["data"]] == [("credit", 100)]


async def test_usage_and_errors_are_kept_per_environment(gw: Gateway) -> None:
    org = await gw.org()
    admin = {"X-API-Key": (await gw.mint(["gateway:admin"], name="admin")).secret}
    live = await gw.mint(["contacts:read"])
    test = await api_keys.issue_api_key(gw.store, org, name="sandbox", scopes=["contacts:read"],
                                        catalog=gw.settings.scopes, environment="test")  # fmt: skip
    for _ in range(3):
        await echoed(gw, "/echo/x", {"X-API-Key": test.secret})
    await echoed(gw, "/echo/x", {"X-API-Key": live.secret})
    assert await refusal(gw, "/down/x", {"X-API-Key": test.secret}) == (
        403, "test_mode_unavailable")  # fmt: skip
    prefix = gw.settings.management.prefix

    async def stats(query: str) -> dict[str, Any]:
        resp = await gw.client.get(f"{prefix}/stats?group_by=key{query}", headers=admin)
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body

    tested = await stats("&environment=test")
    assert tested["environment"] == "test"
    assert (tested["requests"], tested["errors"]) == (4, 1)
    assert [g["group"] for g in tested["groups"]] == [test.record.id]
    lived = await stats("")  # live by default
    assert lived["environment"] == "live"
    assert live.record.id in [g["group"] for g in lived["groups"]]
    assert test.record.id not in [g["group"] for g in lived["groups"]]
    resp = await gw.client.get(f"{prefix}/errors?environment=test", headers=admin)
    assert [e["status"] for e in (await resp.json())["data"]] == [403]
    resp = await gw.client.get(f"{prefix}/errors", headers=admin)
    assert (await resp.json())["data"] == []
