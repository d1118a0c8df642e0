"""The token endpoint, RFC 6749 §3.2: client authentication (§2.3), request format,
and each grant (authorization_code with PKCE §4.1.3, refresh_token with rotation §6,
client_credentials §4.4); errors are §5.2 bodies."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from conftest import PASSWORD, REDIRECT_URI, Gateway
from oauth_helpers import (
    READ_WRITE,
    authorization_code,
    basic_auth,
    bearer,
    echoed,
    issued_tokens,
    oauth_error,
    pkce_pair,
    proxied_status,
    redeem,
    refreshed,
    refused_within,
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


@pytest.fixture
async def batch(gw: Gateway) -> RegisteredClient:
    """A confidential client_credentials client bound to acme."""
    return await gw.oauth_client(
        name="Batch", redirect_uris=(), grant_types=("client_credentials",), org="acme"
    )


# --- authorization_code -------------------------------------------------------


async def test_code_with_pkce_returns_a_5_1_token_response(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce, scope=READ_WRITE)
    resp = await redeem(gw, zap, code, pkce)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == READ_WRITE
    assert crypto.well_formed(body["access_token"], crypto.ACCESS_TOKEN_PREFIX)
    assert crypto.well_formed(body["refresh_token"], crypto.REFRESH_TOKEN_PREFIX)
    assert await proxied_status(gw, body["access_token"]) == 200


async def test_public_client_redeems_with_client_id_and_verifier(gw: Gateway, ada: User) -> None:
    app = await gw.oauth_client(public=True)
    body = await issued_tokens(gw, app)
    assert body["scope"] == "contacts:read"
    assert await proxied_status(gw, body["access_token"]) == 200


async def test_replayed_code_is_refused_and_revokes_what_it_yielded(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    first = await redeem(gw, zap, code, pkce)
    tokens = await first.json()
    assert await proxied_status(gw, tokens["access_token"]) == 200  # now cached
    later = await refreshed(gw, zap, tokens["refresh_token"])  # same family, never used
    await oauth_error(await redeem(gw, zap, code, pkce), 400, "invalid_grant")
    assert await proxied_status(gw, later["access_token"]) == 401
    await refused_within(gw, tokens["access_token"])
    refresh = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=later["refresh_token"]
    )
    await oauth_error(refresh, 400, "invalid_grant")


@with_config(oauth={"code_ttl": 1})
async def test_expired_code_is_invalid_grant(gw: Gateway, ada: User, zap: RegisteredClient) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    await asyncio.sleep(1.1)
    await oauth_error(await redeem(gw, zap, code, pkce), 400, "invalid_grant")


@pytest.mark.parametrize("redirect_uri", [REDIRECT_URI + "/x", "http://127.0.0.1:18999/other", ""])
async def test_redirect_uri_must_match_the_authorization_request(
    gw: Gateway, ada: User, zap: RegisteredClient, redirect_uri: str
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    resp = await redeem(gw, zap, code, pkce, redirect_uri=redirect_uri)
    await oauth_error(resp, 400, "invalid_grant")


async def test_code_of_another_client_is_invalid_grant(
    gw: Gateway, ada: User, zap: RegisteredClient, rival: RegisteredClient
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    await oauth_error(await redeem(gw, rival, code, pkce), 400, "invalid_grant")


@pytest.mark.parametrize(
    "verifier", [None, pkce_pair().verifier, "short"], ids=["missing", "wrong", "malformed"]
)
async def test_pkce_verifier_must_match(
    gw: Gateway, ada: User, zap: RegisteredClient, verifier: str | None
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    extra = {} if verifier is None else {"code_verifier": verifier}
    resp = await redeem(gw, zap, code, None, **extra)
    await oauth_error(resp, 400, "invalid_grant")


async def test_verifier_for_a_code_issued_without_challenge_is_invalid_grant(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    code = await authorization_code(gw, zap, pkce=None)
    await oauth_error(await redeem(gw, zap, code, pkce_pair()), 400, "invalid_grant")


# --- client authentication and request format ---------------------------------


def code_params(code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_both_client_auth_methods_work(
    gw: Gateway, ada: User, zap: RegisteredClient, method: str
) -> None:
    pkce = pkce_pair()
    params = code_params(await authorization_code(gw, zap, pkce=pkce), pkce.verifier)
    assert zap.secret is not None
    if method == "client_secret_basic":
        headers = {"Authorization": basic_auth(zap.client.id, zap.secret)}
    else:
        headers = {}
        params |= {"client_id": zap.client.id, "client_secret": zap.secret}
    resp = await gw.client.post(gw.settings.oauth.paths.token, data=params, headers=headers)
    assert resp.status == 200, await resp.text()


async def test_two_client_auth_methods_at_once_is_invalid_request(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    assert zap.secret is not None
    resp = await redeem(gw, zap, code, pkce, client_secret=zap.secret)
    await oauth_error(resp, 400, "invalid_request")


@pytest.mark.parametrize(
    "credentials",
    ["wrong-basic", "wrong-post", "unknown-basic", "unknown-post", "none"],
)
async def test_bad_client_credentials_are_401_invalid_client(
    gw: Gateway, ada: User, zap: RegisteredClient, credentials: str
) -> None:
    pkce = pkce_pair()
    params = code_params(await authorization_code(gw, zap, pkce=pkce), pkce.verifier)
    client_id = "client_0123456789abcdef" if credentials.startswith("unknown") else zap.client.id
    secret = crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)
    headers = {}
    if credentials.endswith("basic"):
        headers["Authorization"] = basic_auth(client_id, secret)
    elif credentials.endswith("post"):
        params |= {"client_id": client_id, "client_secret": secret}
    resp = await gw.client.post(gw.settings.oauth.paths.token, data=params, headers=headers)
    await oauth_error(resp, 401, "invalid_client")
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")


async def test_json_body_is_accepted(gw: Gateway, ada: User, zap: RegisteredClient) -> None:
    pkce = pkce_pair()
    params = code_params(await authorization_code(gw, zap, pkce=pkce), pkce.verifier)
    assert zap.secret is not None
    resp = await gw.client.post(
        gw.settings.oauth.paths.token,
        json=params,
        headers={"Authorization": basic_auth(zap.client.id, zap.secret)},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["token_type"] == "Bearer"


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x"])
async def test_other_content_types_are_invalid_request(
    gw: Gateway, zap: RegisteredClient, content_type: str
) -> None:
    assert zap.secret is not None
    resp = await gw.client.post(
        gw.settings.oauth.paths.token,
        data=b"grant_type=client_credentials",
        headers={
            "Content-Type": content_type,
            "Authorization": basic_auth(zap.client.id, zap.secret),
        },
    )
    await oauth_error(resp, 400, "invalid_request")


async def test_repeated_parameter_is_invalid_request(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    pkce = pkce_pair()
    params = list(code_params(await authorization_code(gw, zap, pkce=pkce), pkce.verifier).items())
    assert zap.secret is not None
    resp = await gw.client.post(
        gw.settings.oauth.paths.token,
        data=[*params, ("grant_type", "authorization_code")],
        headers={"Authorization": basic_auth(zap.client.id, zap.secret)},
    )
    await oauth_error(resp, 400, "invalid_request")


async def test_unknown_grant_type_is_unsupported_grant_type(
    gw: Gateway, zap: RegisteredClient
) -> None:
    resp = await token_request(gw, zap, grant_type="password", username="a", password="b")
    await oauth_error(resp, 400, "unsupported_grant_type")
    await oauth_error(await token_request(gw, zap), 400, "invalid_request")


async def test_grant_type_not_registered_is_unauthorized_client(
    gw: Gateway, zap: RegisteredClient, batch: RegisteredClient
) -> None:
    resp = await token_request(gw, zap, grant_type="client_credentials")
    await oauth_error(resp, 400, "unauthorized_client")
    fake = crypto.new_secret(crypto.REFRESH_TOKEN_PREFIX)
    resp = await token_request(gw, batch, grant_type="refresh_token", refresh_token=fake)
    await oauth_error(resp, 400, "unauthorized_client")


# --- refresh_token ----------------------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_family(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    first = await issued_tokens(gw, zap)
    second = await refreshed(gw, zap, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "contacts:read"
    assert await proxied_status(gw, second["access_token"]) == 200
    reuse = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=first["refresh_token"]
    )
    await oauth_error(reuse, 400, "invalid_grant")
    # The whole family is gone, the newest pair included.
    newest = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=second["refresh_token"]
    )
    await oauth_error(newest, 400, "invalid_grant")
    await refused_within(gw, second["access_token"])
    assert await proxied_status(gw, first["access_token"]) == 401


async def test_refresh_may_narrow_the_scope_but_not_widen_it(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    tokens = await issued_tokens(gw, zap, scope=READ_WRITE)
    narrow = await refreshed(gw, zap, tokens["refresh_token"], scope="contacts:read")
    assert narrow["scope"] == "contacts:read"
    resp = await gw.client.post("/contacts/x", json={}, headers=bearer(narrow["access_token"]))
    assert resp.status == 403
    wide = await token_request(
        gw,
        zap,
        grant_type="refresh_token",
        refresh_token=narrow["refresh_token"],
        scope="contacts:read admin:all",
    )
    await oauth_error(wide, 400, "invalid_scope")


async def test_a_refused_refresh_leaves_the_refresh_token_usable(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    """A malformed request (too wide a scope) is the client's mistake, not a sign of a
    stolen token: it must not spend the refresh token, or the client's corrected retry
    is taken for a replay and the user's grant is revoked (RFC 6749 §5.2, §6)."""
    tokens = await issued_tokens(gw, zap)
    wide = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=tokens["refresh_token"], scope=READ_WRITE
    )
    await oauth_error(wide, 400, "invalid_scope")
    again = await refreshed(gw, zap, tokens["refresh_token"])
    assert again["scope"] == "contacts:read"


async def test_a_narrowed_refresh_keeps_the_original_grant(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    """RFC 6749 §6: a new refresh token's scope MUST be identical to the one presented;
    narrowing applies to the access token only."""
    tokens = await issued_tokens(gw, zap, scope=READ_WRITE)
    narrow = await refreshed(gw, zap, tokens["refresh_token"], scope="contacts:read")
    assert narrow["scope"] == "contacts:read"
    full = await refreshed(gw, zap, narrow["refresh_token"])
    assert full["scope"] == READ_WRITE


# --- client_credentials ---------------------------------------------------------


async def test_client_credentials_token_is_for_the_bound_org(
    gw: Gateway, batch: RegisteredClient
) -> None:
    acme = await gw.org("acme")
    resp = await token_request(gw, batch, grant_type="client_credentials")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["scope"] == READ_WRITE
    echo = await (await gw.client.get("/echo/x", headers=bearer(body["access_token"]))).json()
    assert echoed(echo, "X-Org-Id") == [acme.id]
    assert echoed(echo, "X-Client-Id") == [batch.client.id]
    assert echoed(echo, "X-Auth-Method") == ["oauth"]
    assert echoed(echo, "X-User-Id") == []


async def test_client_credentials_scope_narrows_and_never_widens(
    gw: Gateway, batch: RegisteredClient
) -> None:
    resp = await token_request(gw, batch, grant_type="client_credentials", scope="contacts:read")
    assert (await resp.json())["scope"] == "contacts:read"
    resp = await token_request(gw, batch, grant_type="client_credentials", scope="admin:all")
    await oauth_error(resp, 400, "invalid_scope")


async def test_public_client_cannot_use_client_credentials(gw: Gateway) -> None:
    app = await gw.oauth_client(public=True)
    resp = await token_request(gw, app, grant_type="client_credentials")
    await oauth_error(resp, 400, "unauthorized_client")


def auth_string(email: str, password: str) -> str:
    return base64.b64encode(f"{email}:{password}".encode()).decode()


async def test_auth_string_is_refused_unless_the_client_allows_it(
    gw: Gateway, ada: User, batch: RegisteredClient
) -> None:
    resp = await token_request(
        gw,
        batch,
        grant_type="client_credentials",
        auth_string=auth_string("ada@example.com", PASSWORD),
    )
    await oauth_error(resp, 400, "invalid_request")


@pytest.fixture
async def legacy(gw: Gateway) -> RegisteredClient:
    """A client_credentials client of acme that may act for a user (auth_string)."""
    return await gw.oauth_client(
        name="Legacy",
        redirect_uris=(),
        grant_types=("client_credentials",),
        org="acme",
        allow_user_auth=True,
    )


async def test_auth_string_token_carries_the_user(
    gw: Gateway, ada: User, legacy: RegisteredClient
) -> None:
    await gw.user("eve@example.com", orgs=("initech",))
    cases = [
        (auth_string("ada@example.com", "not the password"), "invalid_grant"),
        (auth_string("eve@example.com", PASSWORD), "invalid_grant"),  # not in acme
        ("%%%", "invalid_grant"),
    ]
    for value, error in cases:
        resp = await token_request(gw, legacy, grant_type="client_credentials", auth_string=value)
        await oauth_error(resp, 400, error)
    resp = await token_request(
        gw,
        legacy,
        grant_type="client_credentials",
        auth_string=auth_string("ada@example.com", PASSWORD),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert "refresh_token" not in body
    echo = await (await gw.client.get("/echo/x", headers=bearer(body["access_token"]))).json()
    assert echoed(echo, "X-User-Id") == [ada.id]
    assert echoed(echo, "X-Org-Id") == [(await gw.org("acme")).id]


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


@pytest.mark.parametrize("public", [False, True])
async def test_a_code_presented_by_another_client_stays_usable_by_its_own(
    gw: Gateway, public: bool
) -> None:
    """Client B (or a public client sending only a client_id) cannot burn client A's
    code: the code is looked up as the authenticated client's own before it is spent."""
    await gw.user()
    zap = await gw.oauth_client()
    other = await gw.oauth_client(name="Other", public=public)
    pkce = pkce_pair()
    code = await authorization_code(gw, zap, pkce=pkce)
    await oauth_error(await redeem(gw, other, code, pkce), 400, "invalid_grant")
    resp = await redeem(gw, zap, code, pkce)
    assert resp.status == 200, await resp.text()
    assert "access_token" in await resp.json()


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
async def test_deeply_nested_json_is_a_400_in_the_oauth_format(gw: Gateway, path: str) -> None:
    zap = await gw.oauth_client()
    body = "[" * 5000 + "]" * 5000
    resp = await gw.client.post(
        path,
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": basic_auth(zap.client.id, zap.secret or ""),
        },
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "invalid_request"


@with_config(oauth={"login_throttle": {"per_account": "3/15 minutes"}})
async def test_auth_string_shares_the_login_throttle(
    gw: Gateway, ada: User, legacy: RegisteredClient
) -> None:
    """Password guesses through the legacy auth_string count against the same
    per-account window as the login page, and are refused once it is full."""
    wrong = auth_string("ada@example.com", "not the password")
    statuses = []
    for _ in range(4):
        resp = await token_request(gw, legacy, grant_type="client_credentials", auth_string=wrong)
        statuses.append(resp.status)
    assert statuses == [400, 400, 400, 429]
    assert 0 < int(resp.headers["Retry-After"]) <= 15 * 60
    right = auth_string("ada@example.com", PASSWORD)
    resp = await token_request(gw, legacy, grant_type="client_credentials", auth_string=right)
    assert resp.status == 429  # the window is full, whatever the password
