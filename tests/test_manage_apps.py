"""/scopes, /clients (developer applications) and /grants (connected apps)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import REDIRECT_URI, SCOPES, Gateway
from manage_helpers import (
    OTHER_ORG,
    Api,
    admin_api,
    error_body,
    not_found,
    validation_error,
    walk,
)
from oauth_helpers import (
    READ_WRITE,
    bearer,
    echoed,
    issued_tokens,
    oauth_error,
    proxied_status,
    refused_within,
    token_request,
)

from gateway import crypto
from gateway.config import ADMIN_SCOPE
from gateway.manage.schemas import ClientCreated, ClientOut, GrantOut
from gateway.oauth.clients import RegisteredClient

WEB_APP = {"name": "Zap", "redirect_uris": [REDIRECT_URI], "scopes": ["contacts:read"]}
MACHINE = {
    "name": "Nightly sync",
    "scopes": ["contacts:read"],
    "grant_types": ["client_credentials"],
}


@pytest.fixture
async def admin(gw: Gateway) -> Api:
    return await admin_api(gw)


async def create(admin: Api, **body: Any) -> dict[str, Any]:
    return await admin.ok("POST", "/clients", 201, json={**WEB_APP, **body})


async def registered(gw: Gateway, client_id: str, secret: str | None) -> RegisteredClient:
    """The client as the OAuth helpers drive it, from what the API answered."""
    found = await gw.store.get_client(client_id)
    assert found is not None
    return RegisteredClient(found.client, secret)


async def machine_token(gw: Gateway, client: RegisteredClient) -> str:
    resp = await token_request(gw, client, grant_type="client_credentials", scope="contacts:read")
    body = await resp.json()
    assert resp.status == 200, body
    token: str = body["access_token"]
    return token


# --- scopes ------------------------------------------------------------------------


async def test_the_scope_catalog_lists_the_routes_each_scope_unlocks(admin: Api) -> None:
    listed = await admin.get("/scopes")
    by_name = {s["name"]: s for s in listed["data"]}
    assert set(by_name) == {*SCOPES, ADMIN_SCOPE}
    for name, text in SCOPES.items():
        assert by_name[name]["description"] == text
    assert by_name[ADMIN_SCOPE]["description"]
    assert by_name[ADMIN_SCOPE]["routes"] == [], "no proxied route needs gateway:admin"
    assert by_name["contacts:read"]["routes"] == [
        {"methods": ["GET", "HEAD"], "path": "/contacts", "upstream": "main"},
        {"methods": ["GET"], "path": "/contacts/{id}", "upstream": "main"},
        {"methods": None, "path": "/echo/scoped/**", "upstream": "main"},
    ]
    assert by_name["contacts:write"]["routes"] == [
        {"methods": ["POST", "PATCH", "DELETE"], "path": "/contacts/**", "upstream": "main"},
        {"methods": None, "path": "/echo/scoped/**", "upstream": "main"},
    ]
    assert by_name["products:read"]["routes"] == []
    assert by_name["admin:all"]["routes"] == [
        {"methods": None, "path": "/admin/echo/**", "upstream": "main"}
    ]


# --- clients ----------------------------------------------------------------------


async def test_a_new_client_shows_its_secret_once(gw: Gateway, admin: Api) -> None:
    created = await create(admin, scopes=["contacts:read", "contacts:write"])
    ClientCreated.model_validate(created)
    assert created["client_secret"].startswith(crypto.CLIENT_SECRET_PREFIX)
    assert created["name"] == "Zap" and created["public"] is False
    assert created["redirect_uris"] == [REDIRECT_URI]
    assert created["allowed_scopes"] == ["contacts:read", "contacts:write"]
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    assert created["org_id"] is None and created["disabled_at"] is None

    shown = await admin.get(f"/clients/{created['client_id']}")
    ClientOut.model_validate(shown)
    assert "client_secret" not in shown
    assert shown == {k: v for k, v in created.items() if k != "client_secret"}
    assert created["client_secret"] not in str(await admin.get("/clients"))
    assert created["client_secret"] not in str(gw.db_rows("SELECT * FROM oauth_clients"))


async def test_a_public_client_has_no_secret(admin: Api) -> None:
    created = await create(admin, public=True)
    assert created["public"] is True
    assert created["client_secret"] is None
    resp = await admin.request("POST", f"/clients/{created['client_id']}/secret")
    await validation_error(resp, "")


async def test_an_app_registered_here_completes_the_oauth_flow(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    await gw.user("ada@example.com")
    client = await registered(gw, created["client_id"], created["client_secret"])
    tokens = await issued_tokens(gw, client)
    assert await proxied_status(gw, tokens["access_token"]) == 200


async def test_a_machine_client_acts_for_the_admins_organization(gw: Gateway, admin: Api) -> None:
    created = await admin.ok("POST", "/clients", 201, json=MACHINE)
    acme = await gw.org()
    assert created["org_id"] == acme.id
    assert created["grant_types"] == ["client_credentials"]
    assert created["redirect_uris"] == []
    token = await machine_token(
        gw, await registered(gw, created["client_id"], created["client_secret"])
    )
    resp = await gw.client.get("/echo/x", headers=bearer(token))
    assert echoed(await resp.json(), "X-Org-Id") == [acme.id]


async def test_listing_walks_the_organizations_clients_once(gw: Gateway, admin: Api) -> None:
    mine = {(await create(admin, name=f"app {i}"))["client_id"] for i in range(4)}
    theirs = await admin_api(gw, OTHER_ORG)
    await theirs.ok("POST", "/clients", 201, json=WEB_APP)
    await gw.oauth_client(name="No owner")
    for limit in (1, 3, 50):
        ids = [c["client_id"] for c in await walk(admin, "/clients", limit)]
        assert sorted(ids) == sorted(mine), limit


async def test_name_redirect_uris_and_scopes_change(admin: Api) -> None:
    created = await create(admin)
    path = f"/clients/{created['client_id']}"
    patched = await admin.ok(
        "PATCH",
        path,
        json={
            "name": "Zap 2",
            "redirect_uris": ["https://zap.example/cb", "com.example.zap:/cb"],
            "scopes": ["contacts:read", "products:read"],
        },
    )
    assert patched["name"] == "Zap 2"
    assert patched["redirect_uris"] == ["https://zap.example/cb", "com.example.zap:/cb"]
    assert patched["allowed_scopes"] == ["contacts:read", "products:read"]
    assert await admin.get(path) == patched
    assert await admin.ok("PATCH", path, json={}) == patched


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "redirect_uris[0]"),
        ({"redirect_uris": [REDIRECT_URI, "https://x.example/cb#frag"]}, "redirect_uris[1]"),
        ({"redirect_uris": ["/relative"]}, "redirect_uris[0]"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"scopes": ["contacts:read", "contacts:wrte"]}, "scopes[1]"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["contacts:read", ADMIN_SCOPE]}, "scopes"),
        ({"name": ""}, "name"),
        ({"grant_types": ["client_credentials"]}, "grant_types"),
    ],
)
async def test_a_refused_client_patch_names_the_field_and_changes_nothing(
    admin: Api, body: dict[str, Any], field: str
) -> None:
    created = await create(admin)
    path = f"/clients/{created['client_id']}"
    before = await admin.get(path)
    await validation_error(await admin.request("PATCH", path, json=body), field)
    assert await admin.get(path) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "redirect_uris[0]"),
        ({"redirect_uris": [REDIRECT_URI, "ftp://files.example/cb"]}, "redirect_uris[1]"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"scopes": ["contacts:read", "nope"]}, "scopes[1]"),
        ({"scopes": []}, "scopes"),
        ({"grant_types": ["implicit"]}, "grant_types[0]"),
        ({"grant_types": []}, "grant_types"),
        ({"public": "maybe"}, "public"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"client_secret": "mine"}, "client_secret"),
    ],
)
async def test_create_names_the_bad_field_and_creates_nothing(
    admin: Api, body: dict[str, Any], field: str
) -> None:
    await validation_error(await admin.request("POST", "/clients", json={**WEB_APP, **body}), field)
    assert (await admin.get("/clients"))["data"] == []


async def test_gateway_admin_cannot_be_given_to_an_app(admin: Api) -> None:
    for scopes in ([ADMIN_SCOPE], ["contacts:read", ADMIN_SCOPE]):
        resp = await admin.request("POST", "/clients", json={**WEB_APP, "scopes": scopes})
        body = await error_body(resp, 400, "validation_error")
        assert ADMIN_SCOPE in body["message"]
        assert body["field"].startswith("scopes"), body
    assert (await admin.get("/clients"))["data"] == []


async def test_a_rotated_secret_replaces_the_old_one(gw: Gateway, admin: Api) -> None:
    created = await admin.ok("POST", "/clients", 201, json=MACHINE)
    client_id = created["client_id"]
    old = await registered(gw, client_id, created["client_secret"])
    await machine_token(gw, old)
    rotated = await admin.ok("POST", f"/clients/{client_id}/secret")
    assert set(rotated) == {"client_id", "client_secret"}
    assert rotated["client_id"] == client_id
    assert rotated["client_secret"] != created["client_secret"]
    resp = await token_request(gw, old, grant_type="client_credentials")
    await oauth_error(resp, 401, "invalid_client")
    new = await registered(gw, client_id, rotated["client_secret"])
    assert await proxied_status(gw, await machine_token(gw, new)) == 200
    assert "client_secret" not in await admin.get(f"/clients/{client_id}")


async def test_a_deleted_client_loses_its_tokens_within_a_second(gw: Gateway, admin: Api) -> None:
    created = await admin.ok("POST", "/clients", 201, json=MACHINE)
    client = await registered(gw, created["client_id"], created["client_secret"])
    token = await machine_token(gw, client)
    assert await proxied_status(gw, token) == 200  # cached
    await admin.ok("DELETE", f"/clients/{created['client_id']}", 204)
    await refused_within(gw, token)
    await not_found(await admin.request("GET", f"/clients/{created['client_id']}"))
    await not_found(await admin.request("DELETE", f"/clients/{created['client_id']}"))
    resp = await token_request(gw, client, grant_type="client_credentials")
    await oauth_error(resp, 401, "invalid_client")
    assert (await admin.get("/clients"))["data"] == []


async def test_a_deleted_web_app_disappears_from_connected_apps(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    await gw.user("ada@example.com")
    client = await registered(gw, created["client_id"], created["client_secret"])
    tokens = await issued_tokens(gw, client)
    assert len((await admin.get("/grants"))["data"]) == 1
    await admin.ok("DELETE", f"/clients/{created['client_id']}", 204)
    await refused_within(gw, tokens["access_token"])
    assert (await admin.get("/grants"))["data"] == []
    resp = await token_request(
        gw, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    await oauth_error(resp, 401, "invalid_client")


# --- grants (connected apps) --------------------------------------------------------


async def test_grants_list_what_users_approved(gw: Gateway, admin: Api) -> None:
    ada = await gw.user("ada@example.com", orgs=("acme", OTHER_ORG))
    zap = await gw.oauth_client(name="Zap")
    acme, globex = await gw.org(), await gw.org(OTHER_ORG)
    await issued_tokens(gw, zap, scope=READ_WRITE, org_id=acme.id)
    await issued_tokens(gw, zap, scope="contacts:read", org_id=globex.id)

    (grant,) = (await admin.get("/grants"))["data"]
    GrantOut.model_validate(grant)
    assert grant["client_id"] == zap.client.id
    assert grant["client_name"] == "Zap"
    assert grant["user_id"] == ada.id
    assert grant["user_email"] == "ada@example.com"
    assert grant["scopes"] == ["contacts:read", "contacts:write"]
    (theirs,) = (await (await admin_api(gw, OTHER_ORG)).get("/grants"))["data"]
    assert theirs["scopes"] == ["contacts:read"] and theirs["id"] != grant["id"]


async def test_grants_are_paginated(gw: Gateway, admin: Api) -> None:
    zap = await gw.oauth_client(name="Zap")
    rival = await gw.oauth_client(name="Rival")
    await gw.user("ada@example.com")
    await issued_tokens(gw, zap)
    await issued_tokens(gw, rival)
    listed = await walk(admin, "/grants", 1)
    assert sorted(g["client_name"] for g in listed) == ["Rival", "Zap"]


async def test_a_revoked_grant_takes_its_tokens_along_within_a_second(
    gw: Gateway, admin: Api
) -> None:
    await gw.user("ada@example.com")
    zap = await gw.oauth_client(name="Zap")
    tokens = await issued_tokens(gw, zap)
    assert await proxied_status(gw, tokens["access_token"]) == 200  # cached
    (grant,) = (await admin.get("/grants"))["data"]
    await admin.ok("DELETE", f"/grants/{grant['id']}", 204)
    await refused_within(gw, tokens["access_token"])
    assert (await admin.get("/grants"))["data"] == []
    await not_found(await admin.request("DELETE", f"/grants/{grant['id']}"))
    resp = await token_request(
        gw, zap, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    await oauth_error(resp, 400, "invalid_grant")


async def test_another_organizations_grant_is_not_found_and_keeps_working(
    gw: Gateway, admin: Api
) -> None:
    await gw.user("ada@example.com", orgs=(OTHER_ORG,))
    zap = await gw.oauth_client(name="Zap")
    tokens = await issued_tokens(gw, zap)
    theirs = await admin_api(gw, OTHER_ORG)
    (grant,) = (await theirs.get("/grants"))["data"]
    assert (await admin.get("/grants"))["data"] == []
    await not_found(await admin.request("DELETE", f"/grants/{grant['id']}"))
    assert (await theirs.get("/grants"))["data"] == [grant]
    assert await proxied_status(gw, tokens["access_token"]) == 200
