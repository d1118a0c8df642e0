"""What the issued tokens do: on proxied routes (RFC 6750), at revocation (RFC 7009)
and introspection (RFC 7662); plus the server metadata (RFC 8414), configurable
endpoint paths and the legacy ``access_token`` header."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import SCOPES, Gateway
from oauth_helpers import (
    READ_WRITE,
    authorize_query,
    bearer,
    echoed,
    introspect,
    issued_tokens,
    issuer,
    login_and_consent,
    oauth_error,
    pkce_pair,
    proxied_status,
    redirect_params,
    refreshed,
    refused_within,
    revoke,
    token_request,
    with_config,
)

from gateway import crypto
from gateway.oauth.clients import RegisteredClient
from gateway.store.records import User


@pytest.fixture
async def ada(gw: Gateway) -> User:
    return await gw.user("ada@example.com", orgs=("acme", "globex"))


@pytest.fixture
async def zap(gw: Gateway) -> RegisteredClient:
    return await gw.oauth_client(name="Zap")


@pytest.fixture
async def rival(gw: Gateway) -> RegisteredClient:
    return await gw.oauth_client(name="Rival")


def token_ids(gw: Gateway, kind: str) -> list[str]:
    return [r[0] for r in gw.db_rows(f"SELECT id FROM oauth_tokens WHERE kind = '{kind}'")]


# --- using tokens -----------------------------------------------------------------


async def test_upstream_learns_org_scopes_client_user_and_credential(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    globex = await gw.org("globex")
    tokens = await issued_tokens(gw, zap, scope=READ_WRITE, org_id=globex.id)
    resp = await gw.client.get("/echo/x", headers=bearer(tokens["access_token"]))
    assert resp.status == 200
    echo = await resp.json()
    assert echoed(echo, "X-Org-Id") == [globex.id]
    assert echoed(echo, "X-Scopes") == [READ_WRITE]
    assert echoed(echo, "X-Auth-Method") == ["oauth"]
    assert echoed(echo, "X-Client-Id") == [zap.client.id]
    assert echoed(echo, "X-User-Id") == [ada.id]
    assert echoed(echo, "X-Credential-Id") == token_ids(gw, "access")
    assert echoed(echo, "Authorization") == []


async def test_token_without_the_route_scope_is_403(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    resp = await gw.client.post("/contacts/x", json={}, headers=bearer(tokens["access_token"]))
    assert resp.status == 403
    assert (await resp.json())["error"] == "forbidden"
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]


@with_config(oauth={"access_token_ttl": 1})
async def test_expired_access_token_is_401_and_inactive(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    assert tokens["expires_in"] == 1
    assert await proxied_status(gw, tokens["access_token"]) == 200
    await asyncio.sleep(1.1)
    resp = await gw.client.get("/contacts", headers=bearer(tokens["access_token"]))
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert await (await introspect(gw, zap, tokens["access_token"])).json() == {"active": False}
    # The refresh token outlives it.
    fresh = await refreshed(gw, zap, tokens["refresh_token"])
    assert await proxied_status(gw, fresh["access_token"]) == 200


async def test_refresh_token_is_not_a_bearer_token(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    assert await proxied_status(gw, tokens["refresh_token"]) == 401


async def test_revoked_access_token_is_refused_within_a_second(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    assert await proxied_status(gw, tokens["access_token"]) == 200  # now cached
    resp = await revoke(gw, zap, tokens["access_token"])
    assert resp.status == 200
    assert await resp.read() == b""
    await refused_within(gw, tokens["access_token"])
    assert await (await introspect(gw, zap, tokens["access_token"])).json() == {"active": False}


async def test_revoking_the_refresh_token_kills_its_access_token(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    assert await proxied_status(gw, tokens["access_token"]) == 200
    assert (await revoke(gw, zap, tokens["refresh_token"])).status == 200
    await refused_within(gw, tokens["access_token"])
    resp = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    await oauth_error(resp, 400, "invalid_grant")


@pytest.mark.parametrize(
    "token",
    ["nope", crypto.new_secret(crypto.ACCESS_TOKEN_PREFIX)],
    ids=["garbage", "well-formed"],
)
async def test_revoking_an_unknown_token_is_200(
    gw: Gateway, zap: RegisteredClient, token: str
) -> None:
    resp = await revoke(gw, zap, token)
    assert resp.status == 200
    assert await resp.read() == b""


async def test_another_client_cannot_revoke_a_token(
    gw: Gateway, ada: User, zap: RegisteredClient, rival: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert (await revoke(gw, rival, token)).status == 200
    await asyncio.sleep(0.3)  # three revocation-watcher polls
    assert await proxied_status(gw, tokens["access_token"]) == 200
    assert (await (await introspect(gw, zap, tokens["access_token"])).json())["active"] is True
    await refreshed(gw, zap, tokens["refresh_token"])


# --- introspection ----------------------------------------------------------------


async def test_introspection_describes_an_active_token(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    globex = await gw.org("globex")
    before = int(time.time())
    tokens = await issued_tokens(gw, zap, scope=READ_WRITE, org_id=globex.id)
    resp = await introspect(gw, zap, tokens["access_token"])
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["active"] is True
    assert body["scope"] == READ_WRITE
    assert body["client_id"] == zap.client.id
    assert body["sub"] == ada.id
    assert body["org_id"] == globex.id
    assert body["token_type"] == "Bearer"
    assert body["iss"] == issuer(gw)
    assert before <= body["iat"] <= int(time.time())
    assert body["exp"] == pytest.approx(body["iat"] + 3600, abs=1)


async def test_introspection_reveals_nothing_about_other_tokens(
    gw: Gateway, ada: User, zap: RegisteredClient, rival: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    unknown = crypto.new_secret(crypto.ACCESS_TOKEN_PREFIX)
    for client, token in [(zap, unknown), (zap, "nope"), (rival, tokens["access_token"])]:
        resp = await introspect(gw, client, token)
        assert resp.status == 200
        assert await resp.json() == {"active": False}
    await revoke(gw, zap, tokens["access_token"])
    assert await (await introspect(gw, zap, tokens["access_token"])).json() == {"active": False}


async def test_public_client_cannot_introspect(gw: Gateway, ada: User) -> None:
    app = await gw.oauth_client(public=True)
    tokens = await issued_tokens(gw, app)
    resp = await introspect(gw, app, tokens["access_token"])
    await oauth_error(resp, 401, "invalid_client")


async def test_a_spent_refresh_token_is_inactive(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    fresh = await refreshed(gw, zap, tokens["refresh_token"])
    spent = await (await introspect(gw, zap, tokens["refresh_token"])).json()
    assert spent == {"active": False}
    live = await (await introspect(gw, zap, fresh["refresh_token"])).json()
    assert live["active"] is True
    assert live["token_type"] == "refresh_token"


# --- metadata and paths ---------------------------------------------------------


async def test_metadata_lists_endpoints_methods_and_scopes(gw: Gateway) -> None:
    resp = await gw.client.get("/.well-known/oauth-authorization-server")
    assert resp.status == 200
    meta = await resp.json()
    base = issuer(gw)
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == base + "/oauth/authorize"
    assert meta["token_endpoint"] == base + "/oauth/token"
    assert meta["revocation_endpoint"] == base + "/oauth/revoke"
    assert meta["introspection_endpoint"] == base + "/oauth/introspect"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert sorted(meta["grant_types_supported"]) == [
        "authorization_code",
        "client_credentials",
        "refresh_token",
    ]
    assert sorted(meta["token_endpoint_auth_methods_supported"]) == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert sorted(meta["introspection_endpoint_auth_methods_supported"]) == [
        "client_secret_basic",
        "client_secret_post",
    ]
    # The configured catalog; the built-in gateway:admin only when OAuth may grant it.
    assert sorted(meta["scopes_supported"]) == sorted(SCOPES)
    assert meta["authorization_response_iss_parameter_supported"] is True


CUSTOM_PATHS = {
    name: f"/functions/v1/oauth-{name}"
    for name in ("authorize", "token", "revoke", "introspect", "login", "logout")
}


@with_config("custom-paths", oauth={"paths": CUSTOM_PATHS})
async def test_configured_paths_are_used_by_metadata_and_endpoints(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    meta = await (await gw.client.get("/.well-known/oauth-authorization-server")).json()
    base = issuer(gw)
    for key, name in [
        ("authorization_endpoint", "authorize"),
        ("token_endpoint", "token"),
        ("revocation_endpoint", "revoke"),
        ("introspection_endpoint", "introspect"),
    ]:
        assert meta[key] == base + CUSTOM_PATHS[name]
    # The helpers follow gw.settings.oauth.paths: the whole flow runs on the new paths.
    location = await login_and_consent(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    assert "code" in redirect_params(location)
    tokens = await issued_tokens(gw, zap)
    assert (await (await introspect(gw, zap, tokens["access_token"])).json())["active"] is True
    assert (await revoke(gw, zap, tokens["access_token"])).status == 200
    for old in ("/oauth/authorize", "/oauth/token", "/oauth/login"):
        resp = await gw.client.get(old, allow_redirects=False)
        assert resp.status == 404, old


# --- the legacy access_token header ----------------------------------------------


@with_config(oauth={"access_token_header": True})
async def test_access_token_header_works_when_enabled(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    resp = await gw.client.get("/echo/x", headers={"access_token": tokens["access_token"]})
    assert resp.status == 200
    echo = await resp.json()
    assert echoed(echo, "X-Auth-Method") == ["oauth"]
    assert echoed(echo, "access_token") == []


async def test_access_token_header_is_ignored_by_default(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap)
    resp = await gw.client.get("/contacts", headers={"access_token": tokens["access_token"]})
    assert resp.status == 401
