"""CORS on routes: preflights answered by the gateway, allowed origins named on actual
responses (refusals included), foreign origins given nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import encode_basic_auth
from conftest import Gateway
from oauth_helpers import with_config

from gateway.config import settings_from_dict
from gateway.errors import ConfigError

APP = "http://app.example.com"
FOREIGN = "http://evil.example.com"
ROUTES = [
    {"path": "/echo/cors/**", "upstream": "main", "scopes": ["contacts:read"],
     "methods": ["GET", "POST"], "cors": {"origins": [APP], "max_age": 300}},
    {"path": "/echo/anyone/**", "upstream": "main", "auth": "none",
     "cors": {"origins": ["*"]}},
    {"path": "/echo/**", "upstream": "main"},
]  # fmt: skip
CORS = with_config("cors routes", routes=ROUTES)


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip


@CORS
async def test_a_preflight_is_answered_by_the_gateway_without_a_credential(gw: Gateway) -> None:
    resp = await gw.client.options("/echo/cors/contacts", headers=preflight(APP))
    assert resp.status == 204
    assert await resp.read() == b""
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Access-Control-Max-Age"] == "300"
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    # A foreign origin gets no Access-Control-Allow-* at all.
    resp = await gw.client.options("/echo/cors/contacts", headers=preflight(FOREIGN))
    assert resp.status == 204
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


@CORS
async def test_actual_responses_name_an_allowed_origin_only(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/echo/cors/x", headers={"X-API-Key": key.secret, "Origin": APP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    assert resp.headers.getall("Vary")[-1] == "Origin"
    # A refusal is readable by the page too.
    resp = await gw.client.get("/echo/cors/x", headers={"Origin": APP})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    resp = await gw.client.get("/echo/cors/x", headers={"X-API-Key": key.secret, "Origin": FOREIGN})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    # A route without CORS says nothing.
    resp = await gw.client.get("/echo/other", headers={"X-API-Key": key.secret, "Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers


@CORS
async def test_any_origin_is_a_star(gw: Gateway) -> None:
    resp = await gw.client.options("/echo/anyone/x", headers=preflight(FOREIGN, "GET"))
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await gw.client.get("/echo/anyone/x", headers={"Origin": FOREIGN})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"


@CORS
async def test_a_preflight_for_a_route_without_cors_is_an_ordinary_request(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    headers = {**preflight(APP, "GET"), "X-API-Key": key.secret}
    resp = await gw.client.options("/echo/other", headers=headers)
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.status == 200  # /echo/** takes any method: the upstream answered it


@pytest.mark.parametrize(
    ("cors", "problem"),
    [
        ({"origins": ["*"], "credentials": True}, "'*' is allowed only without credentials"),
        ({"origins": ["http://app.example.com/path"]}, "is not an origin"),
        ({"origins": []}, "list at least one origin"),
    ],
)
def test_bad_cors_settings_are_refused(
    config: dict[str, Any], cors: dict[str, Any], problem: str
) -> None:
    config["routes"][0]["cors"] = cors
    with pytest.raises(ConfigError) as raised:
        settings_from_dict(config)
    assert problem in str(raised.value)
    assert "routes[0].cors" in str(raised.value)


# --- the token and revocation endpoints --------------------------------------------

SPA = "http://127.0.0.1:5555"


async def test_the_token_endpoint_answers_cors_for_a_public_client_s_origin(gw: Gateway) -> None:
    spa = await gw.oauth_client(name="Spa", public=True, redirect_uris=(SPA + "/callback",))
    other = await gw.oauth_client(name="Other", redirect_uris=("https://other.example/cb",))
    for path in ("/oauth/token", "/oauth/revoke"):
        resp = await gw.client.options(path, headers=preflight(SPA))
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == SPA
        assert resp.headers["Access-Control-Allow-Methods"] == "POST"
        resp = await gw.client.options(path, headers=preflight(FOREIGN))
        assert "Access-Control-Allow-Origin" not in resp.headers
    # The actual answer names the origin when it is the named client's, errors included.
    form = {"grant_type": "authorization_code", "code": "nope", "client_id": spa.client.id,
            "redirect_uri": SPA + "/callback", "code_verifier": "v" * 43}  # fmt: skip
    resp = await gw.client.post("/oauth/token", data=form, headers={"Origin": SPA})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    assert resp.headers["Access-Control-Allow-Origin"] == SPA
    assert "Origin" in resp.headers.getall("Vary")
    resp = await gw.client.post("/oauth/token", data={**form, "client_id": other.client.id},
                                headers={"Origin": SPA})  # fmt: skip
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_client_s_allowed_origins_are_answered_too(gw: Gateway) -> None:
    app = await gw.oauth_client(
        name="Backoffice", grant_types=("client_credentials",), org="acme",
        allowed_origins=("https://spa.example.com",),
    )  # fmt: skip
    assert app.secret is not None
    origin = "https://spa.example.com"
    resp = await gw.client.options("/oauth/token", headers=preflight(origin))
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    resp = await gw.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Origin": origin,
                 "Authorization": encode_basic_auth(app.client.id, app.secret)},
    )  # fmt: skip
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == origin


async def test_the_management_api_and_pages_never_answer_cors(gw: Gateway) -> None:
    await gw.oauth_client(name="Spa", public=True, redirect_uris=(SPA + "/callback",))
    prefix = gw.settings.management.prefix
    for path in (prefix + "/keys", "/oauth/authorize", "/dashboard"):
        resp = await gw.client.options(path, headers=preflight(SPA, "GET"))
        assert "Access-Control-Allow-Origin" not in resp.headers, path
        resp = await gw.client.get(path, headers={"Origin": SPA}, allow_redirects=False)
        assert "Access-Control-Allow-Origin" not in resp.headers, path
