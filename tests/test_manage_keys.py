"""/keys: an organization's API keys through the management API, and the limits
those keys carry as the gateway enforces them on proxied requests."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest
from conftest import Gateway
from manage_helpers import (
    OTHER_ORG,
    Api,
    admin_api,
    api_key,
    error_body,
    eventually,
    not_found,
    validation_error,
    walk,
)
from oauth_helpers import echoed, proxied_status, refused_within, with_config

from gateway.manage.schemas import KeyCreated

FUTURE = "2031-01-02T03:04:05Z"
PAST = "2020-01-02T03:04:05Z"
READ = {"name": "reader", "scopes": ["contacts:read"]}


@pytest.fixture
async def admin(gw: Gateway) -> Api:
    return await admin_api(gw)


async def create(admin: Api, **body: Any) -> dict[str, Any]:
    return await admin.ok("POST", "/keys", 201, json={**READ, **body})


async def x_scopes(gw: Gateway, secret: str) -> list[str]:
    resp = await gw.client.get("/echo/who", headers=api_key(secret))
    assert resp.status == 200, await resp.text()
    return echoed(await resp.json(), "X-Scopes")


async def get_n(gw: Gateway, secret: str, n: int, path: str = "/contacts") -> list[int]:
    statuses = []
    for _ in range(n):
        resp = await gw.client.get(path, headers=api_key(secret))
        await resp.read()
        statuses.append(resp.status)
    return statuses


# --- create, read, list ------------------------------------------------------------


async def test_a_new_key_is_shown_once_and_works_through_the_gateway(
    gw: Gateway, admin: Api
) -> None:
    created = await create(
        admin, name="crm sync", scopes=["contacts:read", "contacts:write"], ttl=3600
    )
    KeyCreated.model_validate(created)
    acme = await gw.org()
    assert created["org_id"] == acme.id
    assert created["name"] == "crm sync"
    assert created["scopes"] == ["contacts:read", "contacts:write"]
    assert created["key"].startswith(created["prefix"])
    assert created["expires_at"] is not None and created["revoked_at"] is None
    assert created["limits"] == {
        "max_requests": None, "rate_limit": None, "allowed_ips": [],
        "max_paid_requests": None, "max_spend": None,
    }  # fmt: skip

    shown = await admin.get(f"/keys/{created['id']}")
    assert "key" not in shown
    assert shown == {k: v for k, v in created.items() if k != "key"}
    listed = await admin.get("/keys")
    assert all("key" not in k for k in listed["data"])
    assert created["key"] not in str(listed)

    resp = await gw.client.get("/contacts", headers=api_key(created["key"]))
    assert resp.status == 200, await resp.text()
    assert await x_scopes(gw, created["key"]) == ["contacts:read contacts:write"]
    digest_rows = gw.db_rows(f"SELECT digest FROM api_keys WHERE id = '{created['id']}'")
    assert created["key"] not in str(digest_rows)


async def test_an_expiry_time_is_kept_as_sent(admin: Api) -> None:
    created = await create(admin, expires_at=FUTURE)
    assert created["expires_at"] == FUTURE


async def test_listing_walks_every_key_exactly_once(gw: Gateway, admin: Api) -> None:
    mine = {admin.credential_id} | {
        (await gw.mint(["contacts:read"], name=f"k{i}")).record.id for i in range(5)
    }
    await gw.mint(["contacts:read"], org=OTHER_ORG, name="theirs")
    for limit in (1, 2, 6, 50):
        ids = [k["id"] for k in await walk(admin, "/keys", limit)]
        assert sorted(ids) == sorted(mine), limit
        assert len(ids) == len(set(ids)), limit
    last = await admin.get("/keys", limit="6")
    assert last["next_cursor"] is None and len(last["data"]) == 6


async def test_use_through_the_gateway_shows_in_requests_and_last_used(
    gw: Gateway, admin: Api
) -> None:
    created = await create(admin)
    assert (created["requests"], created["last_used_at"]) == (0, None)
    assert await get_n(gw, created["key"], 3) == [200, 200, 200]

    async def counted() -> bool:
        shown = await admin.get(f"/keys/{created['id']}")
        return shown["requests"] == 3 and shown["last_used_at"] is not None

    await eventually(counted, gw.settings.usage.flush_interval + 1.0)


# --- change -------------------------------------------------------------------------


async def test_changed_scopes_reach_the_upstream_within_a_second(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    secret = created["key"]
    assert await x_scopes(gw, secret) == ["contacts:read"]  # now cached
    patched = await admin.ok(
        "PATCH", f"/keys/{created['id']}", json={"scopes": ["contacts:read", "products:read"]}
    )
    assert patched["scopes"] == ["contacts:read", "products:read"]

    async def upstream_sees_new_scopes() -> bool:
        return await x_scopes(gw, secret) == ["contacts:read products:read"]

    await eventually(upstream_sees_new_scopes)
    patched = await admin.ok("PATCH", f"/keys/{created['id']}", json={"scopes": ["products:read"]})

    async def scope_is_gone() -> bool:
        return await proxied_status(gw, secret) == 403

    await eventually(scope_is_gone)


async def test_name_and_expiry_change_and_null_clears_the_expiry(admin: Api) -> None:
    created = await create(admin, ttl=3600)
    path = f"/keys/{created['id']}"
    assert (await admin.ok("PATCH", path, json={"name": "renamed"}))["name"] == "renamed"
    assert (await admin.ok("PATCH", path, json={"expires_at": FUTURE}))["expires_at"] == FUTURE
    assert (await admin.get(path))["expires_at"] == FUTURE
    cleared = await admin.ok("PATCH", path, json={"expires_at": None})
    assert cleared["expires_at"] is None
    assert cleared["name"] == "renamed", "fields not sent stay as they were"
    assert (await admin.get(path))["expires_at"] is None
    before = time.time()
    with_ttl = await admin.ok("PATCH", path, json={"ttl": 600})
    expires = datetime.fromisoformat(with_ttl["expires_at"].replace("Z", "+00:00")).timestamp()
    assert before + 600 - 1 <= expires <= time.time() + 600 + 1
    assert await admin.ok("PATCH", path, json={}) == with_ttl


async def test_a_shortened_expiry_applies_to_a_cached_key(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    assert await proxied_status(gw, created["key"]) == 200
    await admin.ok("PATCH", f"/keys/{created['id']}", json={"ttl": 1})
    await asyncio.sleep(1.0)
    await refused_within(gw, created["key"], 1.0)


async def test_changed_limits_apply_within_a_second_and_null_clears_them(
    gw: Gateway, admin: Api
) -> None:
    created = await create(admin)
    secret, path = created["key"], f"/keys/{created['id']}"
    assert await proxied_status(gw, secret) == 200
    patched = await admin.ok(
        "PATCH", path, json={"limits": {"allowed_ips": ["10.0.0.0/8"], "max_requests": 100}}
    )
    assert patched["limits"]["allowed_ips"] == ["10.0.0.0/8"]
    assert patched["limits"]["max_requests"] == 100

    async def address_refused() -> bool:
        return await proxied_status(gw, secret) == 403

    await eventually(address_refused)
    merged = await admin.ok("PATCH", path, json={"limits": {"rate_limit": 50}})
    assert merged["limits"]["allowed_ips"] == ["10.0.0.0/8"], "limits merge field by field"
    assert merged["limits"]["rate_limit"] == 50
    cleared = await admin.ok("PATCH", path, json={"limits": None})
    assert cleared["limits"] == {
        "max_requests": None, "rate_limit": None, "allowed_ips": [],
        "max_paid_requests": None, "max_spend": None,
    }  # fmt: skip

    async def admitted_again() -> bool:
        return await proxied_status(gw, secret) == 200

    await eventually(admitted_again)


# --- delete and rotate ---------------------------------------------------------------


async def test_a_deleted_key_is_refused_within_a_second(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    assert await proxied_status(gw, created["key"]) == 200  # cached
    await admin.ok("DELETE", f"/keys/{created['id']}", 204)
    await refused_within(gw, created["key"])
    await not_found(await admin.request("GET", f"/keys/{created['id']}"))
    await not_found(await admin.request("DELETE", f"/keys/{created['id']}"))
    await not_found(await admin.request("POST", f"/keys/{created['id']}/rotate"))
    assert [k["id"] for k in (await admin.get("/keys"))["data"]] == [admin.credential_id]


async def test_rotation_replaces_the_secret_at_once_by_default(gw: Gateway, admin: Api) -> None:
    created = await create(admin)
    old = created["key"]
    assert await proxied_status(gw, old) == 200  # cached under the old secret
    rotated = await admin.ok("POST", f"/keys/{created['id']}/rotate")
    KeyCreated.model_validate(rotated)
    assert rotated["id"] == created["id"]
    assert rotated["key"] != old and rotated["key"].startswith(rotated["prefix"])
    assert rotated["prefix"] != created["prefix"]
    assert (await admin.get(f"/keys/{created['id']}"))["prefix"] == rotated["prefix"]
    assert await proxied_status(gw, rotated["key"]) == 200
    await refused_within(gw, old)
    assert await proxied_status(gw, rotated["key"]) == 200


@with_config(management={"rotation_grace": 2})
async def test_rotation_grace_keeps_the_old_secret_for_its_seconds_only(
    gw: Gateway, admin: Api
) -> None:
    created = await create(admin)
    old = created["key"]
    rotated = await admin.ok("POST", f"/keys/{created['id']}/rotate")
    rotated_at = time.monotonic()
    # Throughout the grace (and after the watcher has seen the rotation), both work.
    while time.monotonic() - rotated_at < 0.5:
        assert await proxied_status(gw, old) == 200
        assert await proxied_status(gw, rotated["key"]) == 200
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0 - (time.monotonic() - rotated_at))
    await refused_within(gw, old, 1.0)
    assert await proxied_status(gw, rotated["key"]) == 200


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["contacts:read", "contacts:wrte"]}, "scopes[1]"),
        ({"scopes": ["contacts:read", ""]}, "scopes[1]"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "contacts:read"}, "scopes"),
        ({"scopes": None}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": "soon"}, "ttl"),
        ({"ttl": 10**10}, "ttl"),
        ({"expires_at": PAST}, "expires_at"),
        ({"expires_at": "next week"}, "expires_at"),
        ({"limits": {"allowed_ips": ["10.0.0.0/8", "not-an-ip"]}}, "limits.allowed_ips"),
        ({"limits": {"allowed_ips": "10.0.0.0/8"}}, "limits.allowed_ips"),
        ({"limits": {"rate_limit": 0}}, "limits.rate_limit"),
        ({"limits": {"max_requests": -1}}, "limits.max_requests"),
        ({"limits": {"max_spend": 0}}, "limits.max_spend"),
        ({"limits": {"colour": "red"}}, "limits.colour"),
        ({"limits": "strict"}, "limits"),
        ({"key": "gwk_mine"}, "key"),
    ],
)
async def test_create_names_the_bad_field_and_creates_nothing(
    admin: Api, body: dict[str, Any], field: str
) -> None:
    resp = await admin.request("POST", "/keys", json={**READ, **body})
    await validation_error(resp, field)
    assert [k["id"] for k in (await admin.get("/keys"))["data"]] == [admin.credential_id]


async def test_missing_required_fields_are_named(admin: Api) -> None:
    await validation_error(await admin.request("POST", "/keys", json={"scopes": ["x"]}), "name")
    await validation_error(await admin.request("POST", "/keys", json={"name": "k"}), "scopes")


async def test_ttl_and_expires_at_together_are_refused_naming_one_of_them(admin: Api) -> None:
    resp = await admin.request("POST", "/keys", json={**READ, "ttl": 60, "expires_at": FUTURE})
    body = await error_body(resp, 400, "validation_error")
    assert body["field"] in {"ttl", "expires_at"}, body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["contacts:read", "nope"]}, "scopes[1]"),
        ({"scopes": []}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"ttl": 0}, "ttl"),
        ({"expires_at": PAST}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"limits": {"allowed_ips": ["999.1.1.1"]}}, "limits.allowed_ips"),
        ({"limits": {"rate_limit": "fast"}}, "limits.rate_limit"),
        ({"colour": "red"}, "colour"),
        ({"name": "renamed", "scopes": ["contacts:read", "nope"]}, "scopes[1]"),
        ({"name": "renamed", "expires_at": PAST}, "expires_at"),
    ],
)
async def test_a_refused_patch_names_the_field_and_changes_nothing(
    gw: Gateway, admin: Api, body: dict[str, Any], field: str
) -> None:
    created = await create(admin)
    path = f"/keys/{created['id']}"
    before = await admin.get(path)
    await validation_error(await admin.request("PATCH", path, json=body), field)
    assert await admin.get(path) == before
    assert await x_scopes(gw, created["key"]) == ["contacts:read"]


# --- limits on proxied requests --------------------------------------------------------


async def test_a_rate_limit_refuses_the_next_request_in_the_minute(gw: Gateway, admin: Api) -> None:
    created = await create(admin, limits={"rate_limit": 2})
    assert created["limits"]["rate_limit"] == 2
    assert await get_n(gw, created["key"], 2) == [200, 200]
    resp = await gw.client.get("/contacts", headers=api_key(created["key"]))
    body = await error_body(resp, 429, "rate_limited")
    assert "2 requests per minute" in body["message"]
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert resp.headers["RateLimit-Limit"] == "2"
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(resp.headers["RateLimit-Reset"]) <= 60
    other = await create(admin, name="other")
    assert await get_n(gw, other["key"], 3) == [200, 200, 200], "limits are per key"


async def test_a_quota_refuses_after_max_requests_and_is_not_forwarded(
    gw: Gateway, admin: Api
) -> None:
    created = await create(
        admin, scopes=["contacts:read", "contacts:write"], limits={"max_requests": 3}
    )
    headers = api_key(created["key"])
    for i in range(3):
        resp = await gw.client.post("/contacts", json={"name": f"Ada {i}"}, headers=headers)
        assert resp.status == 201, await resp.text()
    resp = await gw.client.post("/contacts", json={"name": "Ada 3"}, headers=headers)
    body = await error_body(resp, 429, "quota_exceeded")
    assert "3 requests" in body["message"]
    reader = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/contacts", headers=api_key(reader.secret))
    assert [c["name"] for c in (await resp.json())["data"]] == ["Ada 0", "Ada 1", "Ada 2"]


async def test_an_address_outside_allowed_ips_is_forbidden(gw: Gateway, admin: Api) -> None:
    created = await create(admin, limits={"allowed_ips": ["10.0.0.0/8"]})
    for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}):
        resp = await gw.client.get("/echo/x", headers={**api_key(created["key"]), **headers})
        body = await error_body(resp, 403, "forbidden")
        assert "address" in body["message"]
        assert "WWW-Authenticate" not in resp.headers


@with_config(proxy={"trusted_proxies": ["127.0.0.1/32"]})
async def test_behind_a_trusted_proxy_the_forwarded_address_is_checked(
    gw: Gateway, admin: Api
) -> None:
    created = await create(admin, limits={"allowed_ips": ["10.0.0.0/8"]})
    headers = api_key(created["key"])
    resp = await gw.client.get("/echo/x", headers={**headers, "X-Forwarded-For": "10.1.2.3"})
    assert resp.status == 200, await resp.text()
    assert echoed(await resp.json(), "X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"]
    resp = await gw.client.get("/echo/x", headers={**headers, "X-Forwarded-For": "192.0.2.7"})
    await error_body(resp, 403, "forbidden")
    await error_body(await gw.client.get("/echo/x", headers=headers), 403, "forbidden")


@with_config(limits={"per_credential": 2, "per_org": None})
async def test_the_default_rate_applies_to_keys_without_limits(gw: Gateway) -> None:
    minted = await gw.mint(["contacts:read"])
    assert await get_n(gw, minted.secret, 3) == [200, 200, 429]


@with_config(limits={"per_credential": 2, "per_org": None})
async def test_a_keys_own_rate_can_only_tighten_the_default(gw: Gateway, admin: Api) -> None:
    looser = await create(admin, limits={"rate_limit": 5})
    assert await get_n(gw, looser["key"], 2) == [200, 200]
    resp = await gw.client.get("/contacts", headers=api_key(looser["key"]))
    await error_body(resp, 429, "rate_limited")
    assert resp.headers["RateLimit-Limit"] == "2"


@with_config(limits={"per_credential": 2, "per_org": None})
async def test_a_tighter_own_rate_wins_over_the_default(gw: Gateway, admin: Api) -> None:
    tighter = await create(admin, limits={"rate_limit": 1})
    assert await get_n(gw, tighter["key"], 2) == [200, 429]


@with_config(limits={"per_credential": None, "per_org": 3})
async def test_the_per_org_default_is_shared_by_the_orgs_keys(gw: Gateway) -> None:
    first = await gw.mint(["contacts:read"], name="first")
    second = await gw.mint(["contacts:read"], name="second")
    theirs = await gw.mint(["contacts:read"], org=OTHER_ORG)
    assert await get_n(gw, first.secret, 2) == [200, 200]
    assert await get_n(gw, second.secret, 1) == [200]
    resp = await gw.client.get("/contacts", headers=api_key(second.secret))
    body = await error_body(resp, 429, "rate_limited")
    assert "organization" in body["message"]
    assert resp.headers["RateLimit-Limit"] == "3"
    assert await get_n(gw, first.secret, 1) == [429]
    assert await get_n(gw, theirs.secret, 3) == [200, 200, 200]
