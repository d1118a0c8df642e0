"""The core promise: authenticate, check scopes, forward; refuse in the documented way."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from conftest import Gateway
from oauth_helpers import with_config

from gateway import crypto
from gateway.store import ApiKey

UNAUTHORIZED = {"error": "unauthorized", "message": "Invalid or unknown access token."}
NO_CREDENTIAL = {
    "error": "unauthorized",
    "message": "No credential: send X-API-Key or Authorization: Bearer.",
}


async def assert_error(resp: ClientResponse, status: int, body: dict[str, Any] | str) -> None:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    data = await resp.json()
    if isinstance(body, str):
        assert data["error"] == body
        assert isinstance(data["message"], str) and data["message"]
    else:
        assert data == body


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


# --- refusals --------------------------------------------------------------


async def test_missing_credential_is_401_with_bearer_challenge(gw: Gateway) -> None:
    resp = await gw.client.get("/contacts")
    await assert_error(resp, 401, NO_CREDENTIAL)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


@pytest.mark.parametrize(
    "value",
    [
        "nope",
        "gwk_" + "A" * 36,  # right shape, wrong checksum
        crypto.new_api_key(),  # well formed, never issued
    ],
)
async def test_unknown_key_is_401(gw: Gateway, value: str) -> None:
    resp = await gw.client.get("/contacts", headers={"X-API-Key": value})
    await assert_error(resp, 401, UNAUTHORIZED)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_insufficient_scope_is_403_naming_the_first_missing_scope(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.post(
        "/contacts", json={"name": "Ada"}, headers={"X-API-Key": key.secret}
    )
    await assert_error(
        resp, 403, {"error": "forbidden", "message": "Scope 'contacts:write' is required."}
    )
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="gateway", error="insufficient_scope", scope="contacts:write"'
    )


async def test_all_route_scopes_are_required(gw: Gateway) -> None:
    partial = await gw.mint(["contacts:write"])
    resp = await gw.client.get("/echo/scoped/x", headers={"X-API-Key": partial.secret})
    await assert_error(
        resp, 403, {"error": "forbidden", "message": "Scope 'contacts:read' is required."}
    )
    both = await gw.mint(["contacts:read", "contacts:write"])
    resp = await gw.client.get("/echo/scoped/x", headers={"X-API-Key": both.secret})
    assert resp.status == 200


async def test_unmatched_route_is_404_and_never_forwarded(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read", "contacts:write", "admin:all"])
    resp = await gw.client.get("/products", headers={"X-API-Key": key.secret})
    await assert_error(resp, 404, "not_found")
    assert resp.headers["X-Request-Id"]


async def test_wrong_method_is_405_with_allow(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.put("/contacts", headers={"X-API-Key": key.secret})
    await assert_error(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "PATCH", "DELETE"}


async def test_expired_key_is_refused(gw: Gateway) -> None:
    org = await gw.org()
    secret = crypto.new_api_key()
    past = time.time() - 10
    record = ApiKey(
        id=crypto.new_id("key"), org_id=org.id, name="old", prefix=crypto.display_prefix(secret),
        scopes=("contacts:read",), created_at=past - 100, expires_at=past,
    )  # fmt: skip
    await gw.store.insert_api_key(record, crypto.digest(secret))
    resp = await gw.client.get("/contacts", headers={"X-API-Key": secret})
    await assert_error(resp, 401, UNAUTHORIZED)


async def test_key_expiring_while_cached_is_refused(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"], ttl=1)
    resp = await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    assert resp.status == 200
    assert gw.cache_size == 1
    await asyncio.sleep(1.05)
    resp = await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    await assert_error(resp, 401, UNAUTHORIZED)


async def test_revoked_key_is_refused_within_a_second_even_when_cached(gw: Gateway) -> None:
    from gateway.accounts import api_keys

    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    assert resp.status == 200
    await api_keys.revoke_api_key(gw.store, key.record.id)
    deadline = time.monotonic() + 1.0
    status = 200
    while time.monotonic() < deadline:
        status = (await gw.client.get("/contacts", headers={"X-API-Key": key.secret})).status
        if status == 401:
            break
        await asyncio.sleep(0.05)
    assert status == 401


# --- forwarding ------------------------------------------------------------


async def test_upstream_receives_identity_and_not_the_credential(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read", "contacts:write"])
    org = await gw.org()
    resp = await gw.client.post(
        "/echo/a/b?x=1&x=2&y=%20z",
        data=b"hello",
        headers={"X-API-Key": key.secret, "X-Custom": "kept"},
    )
    assert resp.status == 200
    echo = await resp.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo/a/b"
    assert echo["query"] == "x=1&x=2&y=%20z"
    assert echo["body_length"] == 5
    assert header(echo, "X-Org-Id") == [org.id]
    assert header(echo, "X-Scopes") == ["contacts:read contacts:write"]
    assert header(echo, "X-Auth-Method") == ["api_key"]
    assert header(echo, "X-Credential-Id") == [key.record.id]
    assert header(echo, "X-Request-Id") == [resp.headers["X-Request-Id"]]
    assert header(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(echo, "X-Forwarded-Proto") == ["http"]
    assert header(echo, "X-Forwarded-Host") == [f"127.0.0.1:{gw.client.server.port}"]
    assert header(echo, "X-Custom") == ["kept"]
    assert header(echo, "X-API-Key") == []
    assert header(echo, "Authorization") == []


async def test_public_route_forwards_without_credentials(gw: Gateway) -> None:
    resp = await gw.client.get("/status")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    resp = await gw.client.get("/public/echo/hello")
    echo = await resp.json()
    assert echo["path"] == "/echo/hello"  # strip_prefix /public
    assert header(echo, "X-Org-Id") == []


async def test_upstream_status_headers_and_head_pass_through(gw: Gateway) -> None:
    resp = await gw.client.get("/status/418")
    assert resp.status == 418
    assert (await resp.json()) == {"status": 418}
    key = await gw.mint(["contacts:read"])
    head = await gw.client.head("/contacts", headers={"X-API-Key": key.secret})
    assert head.status == 200
    assert await head.read() == b""


async def test_contacts_are_isolated_per_org(gw: Gateway) -> None:
    a = await gw.mint(["contacts:read", "contacts:write"], org="alpha")
    b = await gw.mint(["contacts:read", "contacts:write"], org="beta")
    created = await gw.client.post(
        "/contacts", json={"name": "Ada"}, headers={"X-API-Key": a.secret}
    )
    assert created.status == 201
    contact = await created.json()
    mine = await gw.client.get(f"/contacts/{contact['id']}", headers={"X-API-Key": a.secret})
    assert mine.status == 200
    theirs = await gw.client.get(f"/contacts/{contact['id']}", headers={"X-API-Key": b.secret})
    assert theirs.status == 404


# --- upstream failures -----------------------------------------------------


async def test_upstream_down_is_502_json(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/down/x", headers={"X-API-Key": key.secret})
    await assert_error(resp, 502, "bad_gateway")


async def test_slow_upstream_is_504_json(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    started = time.monotonic()
    resp = await gw.client.get("/slow?delay=3", headers={"X-API-Key": key.secret})
    await assert_error(resp, 504, "gateway_timeout")
    assert time.monotonic() - started < 2.5  # the route's upstream timeout is 0.5 s


async def test_upstream_silent_after_headers_is_504(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/slow-body?delay=3", headers={"X-API-Key": key.secret})
    # The gateway holds its own headers until the first body bytes arrive, so an upstream
    # that goes silent straight after its headers still gets a clean JSON answer.
    await assert_error(resp, 504, "gateway_timeout")


# --- streaming -------------------------------------------------------------


async def test_large_bodies_stream_both_ways(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    size = 32 * 1024 * 1024
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()

    async def body() -> Any:
        sent = 0
        while sent < size:
            expected.update(block)
            yield block
            sent += len(block)

    resp = await gw.client.put("/echo/upload", data=body(), headers={"X-API-Key": key.secret})
    echo = await resp.json()
    assert echo["body_length"] == size
    assert echo["body_sha256"] == expected.hexdigest()

    for url in (f"/bytes/{size}", f"/bytes/{size}?chunked=1"):
        resp = await gw.client.get(url, headers={"X-API-Key": key.secret})
        assert resp.status == 200
        got = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            got += len(chunk)
        assert got == size


# --- storage and operations ------------------------------------------------


async def test_keys_are_stored_only_as_digests(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    rows = gw.db_rows("SELECT id, digest, prefix FROM api_keys")
    assert rows == [
        # The prefix shown in listings: gwk_live_ and 8 of the 30 random characters.
        (key.record.id, hashlib.sha256(key.secret.encode()).hexdigest(), key.secret[:17])
    ]
    raw = b"".join(
        p.read_bytes() for p in gw.db_path.parent.glob(gw.db_path.name + "*") if p.is_file()
    )
    assert key.secret.encode() not in raw


async def test_last_used_is_flushed_in_batches(gw: Gateway) -> None:
    key = await gw.mint(["contacts:read"])
    before = time.time()
    resp = await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    assert resp.status == 200
    deadline = time.monotonic() + 2
    seen = None
    while time.monotonic() < deadline and seen is None:
        await asyncio.sleep(0.1)
        seen = gw.db_rows(f"SELECT last_used_at FROM api_keys WHERE id = '{key.record.id}'")[0][0]
    assert seen is not None and seen >= before - 1


async def test_admin_listener_serves_health_and_metrics(gw: Gateway) -> None:
    assert gw.admin is not None
    key = await gw.mint(["contacts:read"])
    await gw.client.get("/contacts", headers={"X-API-Key": key.secret})
    await gw.client.get("/contacts")
    assert (await gw.admin.get("/healthz")).status == 200
    ready = await gw.admin.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["status"] == "ready" and len(body["config"]) == 16
    text = await (await gw.admin.get("/metrics")).text()
    assert (
        'gateway_requests_total{auth_method="api_key",method="GET",'
        'route="/contacts",status_class="2xx"} 1.0'
    ) in text
    assert 'gateway_auth_failures_total{reason="missing"} 1.0' in text
    assert "gateway_overhead_seconds_bucket" in text
    assert 'gateway_upstream_seconds_count{upstream="main"}' in text
    assert "gateway_requests_in_flight 0.0" in text
    assert key.secret not in text
    # The admin paths are not on the public listener.
    await assert_error(await gw.client.get("/metrics"), 404, "not_found")


async def test_unreachable_store_is_503_never_a_pass(gw: Gateway) -> None:
    cached = await gw.mint(["contacts:read"])
    fresh = await gw.mint(["contacts:read"])
    assert (await gw.client.get("/contacts", headers={"X-API-Key": cached.secret})).status == 200
    await gw.store.close()  # the database goes away under the running gateway
    resp = await gw.client.get("/contacts", headers={"X-API-Key": fresh.secret})
    await assert_error(resp, 503, "service_unavailable")
    assert resp.headers["Retry-After"] == "1"
    assert gw.admin is not None
    ready = await gw.admin.get("/readyz")
    await assert_error(ready, 503, "service_unavailable")
    # Without a way to see revocations the watcher drops the cache: nothing stale is trusted.
    deadline = time.monotonic() + 1
    while gw.cache_size and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    resp = await gw.client.get("/contacts", headers={"X-API-Key": cached.secret})
    await assert_error(resp, 503, "service_unavailable")


async def test_jwks_is_absent_with_opaque_tokens(gw: Gateway) -> None:
    await assert_error(await gw.client.get("/.well-known/jwks.json"), 404, "not_found")
    metadata = await (await gw.client.get("/.well-known/oauth-authorization-server")).json()
    assert "jwks_uri" not in metadata


async def test_every_answer_names_the_gateway_and_no_versions(
    gw: Gateway, upstream_url: str
) -> None:
    key = await gw.mint(["contacts:read"])
    answers = [
        await gw.client.get("/contacts"),  # the engine's refusal
        await gw.client.get("/contacts", headers={"X-API-Key": key.secret}),  # proxied
        await gw.client.get("/.well-known/oauth-authorization-server"),  # aiohttp's
        await gw.client.get(gw.settings.oauth.paths.token),  # aiohttp's 405
    ]
    assert gw.admin is not None
    answers.append(await gw.admin.get("/healthz"))
    assert [r.headers.getall("Server") for r in answers] == [["gateway"]] * len(answers)
    async with aiohttp.ClientSession() as http, http.get(f"{upstream_url}/status") as direct:
        assert "aiohttp" in direct.headers["Server"]  # what the upstream says of itself


@with_config(server_header="Acme API")
async def test_the_server_field_is_configurable(gw: Gateway) -> None:
    assert (await gw.client.get("/contacts")).headers["Server"] == "Acme API"
    assert (await gw.client.get("/.well-known/jwks.json")).headers["Server"] == "Acme API"
