"""The management API as a whole, one table row at a time: who may call each
operation, what each answers, how bodies and pages are validated, the dashboard
session's way in, and the OpenAPI document built from the same table.

Resource behaviour lives in test_manage_keys.py, test_manage_apps.py and
test_manage_usage.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import pytest
from conftest import REDIRECT_URI, Gateway
from manage_helpers import (
    ALL_BUT_ADMIN,
    OTHER_ORG,
    Api,
    admin_api,
    api_key,
    error_body,
    needs_admin_scope,
    not_found,
    operation,
    sign_in,
    validation_error,
)
from oauth_helpers import bearer, issued_tokens, proxied_status

from gateway import crypto
from gateway.config import ADMIN_SCOPE
from gateway.events import new_event
from gateway.manage import OPERATIONS, PAGE, Operation
from gateway.manage.openapi import PARAM, operation_id
from gateway.store.records import Subscription


def each(ops: Iterable[Operation]) -> list[Any]:
    """pytest parameters, one per operation, named like the table row."""
    return [pytest.param(op, id=f"{op.method} {op.path}") for op in ops]


OPS = each(OPERATIONS)
WITH_IDS = each(op for op in OPERATIONS if PARAM.search(op.path))
WITH_BODY = each(op for op in OPERATIONS if op.body is not None)
PAGED = each(op for op in OPERATIONS if all(q in op.query for q in PAGE))

# The smallest body each body-taking operation accepts.
MINIMAL_BODY: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/keys"): {"name": "k", "scopes": ["contacts:read"]},
    ("PATCH", "/keys/{key_id}"): {},
    ("POST", "/clients"): {
        "name": "c",
        "redirect_uris": [REDIRECT_URI],
        "scopes": ["contacts:read"],
    },
    ("PATCH", "/clients/{client_id}"): {},
    # A public address, never contacted: nothing here records a wallet.low event.
    ("POST", "/subscriptions"): {"url": "https://1.1.1.1/hooks", "events": ["wallet.low"]},
    ("PATCH", "/subscriptions/{subscription_id}"): {},
    ("PATCH", "/wallet"): {"low_balance_threshold": 5},
    ("POST", "/wallet/test/credit"): {"amount": 1},
}

# Changes a PATCH of another organization's resource must not make.
HIJACK: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/keys/{key_id}"): {"name": "mine now", "scopes": ["admin:all"], "expires_at": None},
    ("PATCH", "/clients/{client_id}"): {
        "name": "mine now",
        "redirect_uris": ["https://evil.example/cb"],
    },
    ("PATCH", "/subscriptions/{subscription_id}"): {
        "url": "https://1.0.0.1/mine",
        "events": ["key.created"],
    },
}


async def stored_callback(gw: Gateway, org_id: str) -> tuple[str, str]:
    """A subscription and one pending callback of ``org_id``, made in the store: the
    URL is a documentation address, which a delivery refuses without connecting."""
    sub = Subscription(id=f"sub_{org_id[-6:]}", org_id=org_id, environment="live",
                       url="https://192.0.2.1/in", events=("key.created",), description="",
                       secret="whsec_c2VjcmV0", created_at=time.time())  # fmt: skip
    await gw.store.insert_subscription(sub)
    await gw.store.add_event(new_event(org_id, "live", "key.created", {"key_id": "key_x"}))
    (callback,) = await gw.store.callbacks_page(org_id, "live", None, 10)
    return sub.id, callback.id


def concrete(path: str, **ids: str) -> str:
    """A path of the table with its parameters filled in (``nope`` by default)."""
    return PARAM.sub(lambda m: ids.get(m.group(1), "nope"), path)


def placeholder_body(op: Operation) -> dict[str, Any] | None:
    return {} if op.body is not None else None


@pytest.fixture
async def admin(gw: Gateway) -> Api:
    return await admin_api(gw)


@pytest.fixture
async def own_ids(gw: Gateway, admin: Api) -> dict[str, str]:
    """An API key and a client of the admin's organization."""
    key = await gw.mint(["contacts:read"])
    client = await admin.ok("POST", "/clients", 201, json=MINIMAL_BODY[("POST", "/clients")])
    sub = await admin.ok("POST", "/subscriptions", 201,
                         json=MINIMAL_BODY[("POST", "/subscriptions")])  # fmt: skip
    return {"key_id": key.record.id, "client_id": client["client_id"],
            "subscription_id": sub["id"]}  # fmt: skip


# --- who may call ------------------------------------------------------------------


def test_the_tables_below_cover_every_operation() -> None:
    assert {(op.method, op.path) for op in OPERATIONS if op.body} == set(MINIMAL_BODY)
    assert WITH_IDS and WITH_BODY and PAGED


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("credential", ["none", "unknown"])
async def test_every_operation_refuses_a_missing_or_unknown_credential(
    gw: Gateway, op: Operation, credential: str
) -> None:
    headers = api_key(crypto.new_api_key()) if credential == "unknown" else {}
    resp = await Api(gw, headers).request(op.method, concrete(op.path), json=placeholder_body(op))
    body = await error_body(resp, 401, "unauthorized")
    assert set(body) == {"error", "message"}
    challenge = 'Bearer realm="gateway"'
    if credential == "unknown":
        challenge += ', error="invalid_token"'
    assert resp.headers["WWW-Authenticate"] == challenge


@pytest.mark.parametrize("op", OPS)
async def test_every_operation_needs_the_gateway_admin_scope(gw: Gateway, op: Operation) -> None:
    everything_else = await gw.mint(ALL_BUT_ADMIN)
    api = Api(gw, api_key(everything_else.secret))
    resp = await api.request(op.method, concrete(op.path), json=placeholder_body(op))
    await needs_admin_scope(resp)


async def test_an_oauth_token_without_gateway_admin_is_refused_too(gw: Gateway) -> None:
    await gw.user("ada@example.com")
    zap = await gw.oauth_client()
    tokens = await issued_tokens(gw, zap, scope="contacts:read contacts:write")
    await needs_admin_scope(await Api(gw, bearer(tokens["access_token"])).request("GET", "/keys"))


async def test_the_admin_credentials_own_address_limit_applies(gw: Gateway, admin: Api) -> None:
    created = await admin.ok(
        "POST", "/keys", 201,
        json={"name": "vpn only", "scopes": [ADMIN_SCOPE],
              "limits": {"allowed_ips": ["10.0.0.0/8"]}},
    )  # fmt: skip
    resp = await Api(gw, api_key(created["key"])).request("GET", "/keys")
    body = await error_body(resp, 403, "forbidden")
    assert "address" in body["message"]


@pytest.mark.parametrize("path", sorted({op.path for op in OPERATIONS}))
async def test_a_method_outside_the_table_is_405_with_allow(admin: Api, path: str) -> None:
    allowed = sorted(op.method for op in OPERATIONS if op.path == path)
    method = "PUT" if "PUT" not in allowed else "OPTIONS"
    resp = await admin.request(method, concrete(path), json={})
    await error_body(resp, 405, "method_not_allowed")
    assert sorted(resp.headers["Allow"].split(", ")) == allowed


# --- what each answers -------------------------------------------------------------


class Exerciser:
    """Calls operations by their table row; checks the documented status and that the
    body has exactly the fields of the documented response model."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.done: set[tuple[str, str]] = set()

    async def __call__(
        self, method: str, path: str, json: Any = None, **ids: str
    ) -> dict[str, Any]:
        status, model = operation(method, path).ok
        body = await self.api.ok(method, concrete(path, **ids), status, json=json)
        if model is None:
            assert body == {}
        else:
            model.model_validate(body)
            assert set(body) == set(model.model_fields), body
        self.done.add((method, path))
        return body


async def test_every_operation_succeeds_for_an_admin(gw: Gateway, admin: Api) -> None:
    call = Exerciser(admin)
    key = await call("POST", "/keys", MINIMAL_BODY[("POST", "/keys")])
    key_id = key["id"]
    assert [k["id"] for k in (await call("GET", "/keys"))["data"]] == sorted(
        [key_id, admin.credential_id]
    )
    assert (await call("GET", "/keys/{key_id}", key_id=key_id))["name"] == "k"
    patched = await call("PATCH", "/keys/{key_id}", {"name": "renamed"}, key_id=key_id)
    assert patched["name"] == "renamed"
    assert (await call("POST", "/keys/{key_id}/rotate", key_id=key_id))["key"] != key["key"]
    await call("DELETE", "/keys/{key_id}", key_id=key_id)

    assert ADMIN_SCOPE in {s["name"] for s in (await call("GET", "/scopes"))["data"]}

    client = await call("POST", "/clients", MINIMAL_BODY[("POST", "/clients")])
    client_id = client["client_id"]
    assert [c["client_id"] for c in (await call("GET", "/clients"))["data"]] == [client_id]
    assert (await call("GET", "/clients/{client_id}", client_id=client_id))["name"] == "c"
    patched = await call("PATCH", "/clients/{client_id}", {"name": "C"}, client_id=client_id)
    assert patched["name"] == "C"
    secret = await call("POST", "/clients/{client_id}/secret", client_id=client_id)
    assert secret["client_id"] == client_id
    await call("DELETE", "/clients/{client_id}", client_id=client_id)

    await gw.user("ada@example.com")
    await issued_tokens(gw, await gw.oauth_client(name="Zap"))
    (grant,) = (await call("GET", "/grants"))["data"]
    await call("DELETE", "/grants/{grant_id}", grant_id=grant["id"])

    assert (await call("GET", "/stats"))["requests"] > 0
    assert (await call("GET", "/errors"))["data"] == []

    acme = await gw.org()
    await gw.store.wallet_credit(acme.id, 500, "welcome", time.time())
    assert await call("GET", "/wallet") == {"org_id": acme.id, "environment": "live",
                                            "balance": 500}  # fmt: skip
    (credit,) = (await call("GET", "/wallet/transactions"))["data"]
    assert (credit["kind"], credit["amount"], credit["note"]) == ("credit", 500, "welcome")
    threshold = await call("PATCH", "/wallet", MINIMAL_BODY[("PATCH", "/wallet")])
    assert threshold["low_balance_threshold"] == 5
    tested = await call(
        "POST", "/wallet/test/credit", MINIMAL_BODY[("POST", "/wallet/test/credit")]
    )
    assert (tested["environment"], tested["balance"]) == ("test", 1)

    sub = await call("POST", "/subscriptions", MINIMAL_BODY[("POST", "/subscriptions")])
    sub_id = sub["id"]
    assert [s["id"] for s in (await call("GET", "/subscriptions"))["data"]] == [sub_id]
    assert (await call("GET", "/subscriptions/{subscription_id}", subscription_id=sub_id))[
        "events"] == ["wallet.low"]  # fmt: skip
    paused = await call("PATCH", "/subscriptions/{subscription_id}", {"enabled": False},
                        subscription_id=sub_id)  # fmt: skip
    assert paused["disabled"] is True
    rotated = await call("POST", "/subscriptions/{subscription_id}/secret",
                         subscription_id=sub_id)  # fmt: skip
    assert rotated["secret"] != sub["secret"]
    await call("DELETE", "/subscriptions/{subscription_id}", subscription_id=sub_id)
    assert "key.created" in [e["type"] for e in (await call("GET", "/events"))["data"]]
    _, callback_id = await stored_callback(gw, acme.id)
    (pending,) = (await call("GET", "/callbacks"))["data"]
    assert pending["id"] == callback_id
    again = await call("POST", "/callbacks/{callback_id}/retry", callback_id=callback_id)
    assert again["attempt"] == 2
    assert call.done == {(op.method, op.path) for op in OPERATIONS}


# --- another organization's ids ----------------------------------------------------


@pytest.mark.parametrize("op", WITH_IDS)
async def test_another_organizations_ids_are_not_found_and_stay_unchanged(
    gw: Gateway, admin: Api, op: Operation
) -> None:
    theirs = await admin_api(gw, OTHER_ORG)
    key = await gw.mint(["contacts:read"], org=OTHER_ORG)
    client = await theirs.ok("POST", "/clients", 201, json=MINIMAL_BODY[("POST", "/clients")])
    await gw.user("ada@example.com", orgs=("acme", OTHER_ORG))
    zap = await gw.oauth_client(name="Zap")
    globex = await gw.org(OTHER_ORG)
    tokens = await issued_tokens(gw, zap, org_id=globex.id)
    (grant,) = (await theirs.get("/grants"))["data"]
    subscription_id, callback_id = await stored_callback(gw, globex.id)
    ids = {"key_id": key.record.id, "client_id": client["client_id"], "grant_id": grant["id"],
           "subscription_id": subscription_id, "callback_id": callback_id}  # fmt: skip

    async def their_state() -> tuple[Any, ...]:
        return (
            await theirs.get(f"/keys/{key.record.id}"),
            await theirs.get(f"/clients/{client['client_id']}"),
            gw.db_rows(f"SELECT secret_digest FROM oauth_clients WHERE id = '{ids['client_id']}'"),
            await theirs.get("/grants"),
            await theirs.get(f"/subscriptions/{subscription_id}"),
            await theirs.get("/callbacks"),
        )

    before = await their_state()
    body = HIJACK.get((op.method, op.path))
    await not_found(await admin.request(op.method, concrete(op.path, **ids), json=body))
    assert await their_state() == before
    assert await proxied_status(gw, key.secret) == 200
    assert await proxied_status(gw, tokens["access_token"]) == 200


@pytest.mark.parametrize("op", WITH_IDS)
async def test_unknown_ids_are_not_found(admin: Api, op: Operation) -> None:
    body = HIJACK.get((op.method, op.path))
    await not_found(await admin.request(op.method, concrete(op.path), json=body))


# --- bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("op", WITH_BODY)
async def test_an_unknown_json_key_is_named(
    admin: Api, own_ids: dict[str, str], op: Operation
) -> None:
    body = {**MINIMAL_BODY[(op.method, op.path)], "colour": "red"}
    resp = await admin.request(op.method, concrete(op.path, **own_ids), json=body)
    message = await validation_error(resp, "colour")
    assert "colour" in message


@pytest.mark.parametrize("op", WITH_BODY)
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("name=k&scopes=contacts:read", "application/x-www-form-urlencoded"),
        ('{"name": "k",', "application/json"),
        (b"\xff\xfe", "application/json"),
        ("[]", "application/json"),
        ('"name"', "application/json"),
        ("null", "application/json"),
    ],
    ids=["form", "truncated", "not-utf8", "array", "string", "null"],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    admin: Api, own_ids: dict[str, str], op: Operation, data: str | bytes, content_type: str
) -> None:
    resp = await admin.request(
        op.method,
        concrete(op.path, **own_ids),
        data=data,
        headers={"Content-Type": content_type},
    )
    await validation_error(resp, "")


@pytest.mark.parametrize("op", WITH_BODY)
async def test_json_with_a_charset_parameter_is_json(
    admin: Api, own_ids: dict[str, str], op: Operation
) -> None:
    resp = await admin.request(
        op.method,
        concrete(op.path, **own_ids),
        data=json.dumps(MINIMAL_BODY[(op.method, op.path)]),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == op.ok[0], await resp.text()


@pytest.mark.parametrize("op", WITH_BODY)
async def test_a_body_over_64_kib_is_413(
    admin: Api, own_ids: dict[str, str], op: Operation
) -> None:
    body = {**MINIMAL_BODY[(op.method, op.path)], "name": "x" * 70_000}
    resp = await admin.request(op.method, concrete(op.path, **own_ids), json=body)
    await error_body(resp, 413, "payload_too_large")


@pytest.mark.parametrize("op", WITH_BODY)
async def test_a_missing_body_is_refused(
    admin: Api, own_ids: dict[str, str], op: Operation
) -> None:
    resp = await admin.request(op.method, concrete(op.path, **own_ids))
    await validation_error(resp, "")


# --- pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", PAGED)
@pytest.mark.parametrize(
    "query",
    [
        [("limit", "0")],
        [("limit", "201")],
        [("limit", "-1")],
        [("limit", "1.5")],
        [("limit", "ten")],
        [("limit", "²")],  # str.isdigit() says yes; int() says no
        [("limit", "1"), ("limit", "2")],
    ],
    ids=["zero", "too-many", "negative", "fraction", "word", "superscript", "twice"],
)
async def test_a_bad_limit_is_named(
    admin: Api, op: Operation, query: list[tuple[str, str]]
) -> None:
    await validation_error(await admin.request("GET", op.path, params=query), "limit")


@pytest.mark.parametrize("op", PAGED)
@pytest.mark.parametrize(
    "cursor",
    ["a", "zzzz", "!!!!", "not a cursor"],
    ids=["short", "not-utf8", "not-base64", "spaces"],
)
async def test_a_cursor_the_api_did_not_return_is_named(
    admin: Api, op: Operation, cursor: str
) -> None:
    resp = await admin.request("GET", op.path, params={"cursor": cursor})
    await validation_error(resp, "cursor")


@pytest.mark.parametrize("op", PAGED)
async def test_limits_at_the_bounds_are_accepted(admin: Api, op: Operation) -> None:
    for limit in ("1", "200"):
        page = await admin.get(op.path, limit=limit)
        assert set(page) == {"data", "next_cursor"}


# --- the dashboard session -----------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_an_owner_or_admin_session_may_manage_with_the_csrf_token(
    gw: Gateway, role: str
) -> None:
    await gw.user("ada@example.com", role=role)
    minted = await gw.mint(["contacts:read"])
    csrf = await sign_in(gw, "ada@example.com")
    session = Api(gw)

    listed = await session.get("/keys")
    assert [k["id"] for k in listed["data"]] == [minted.record.id]

    new_key = MINIMAL_BODY[("POST", "/keys")]
    resp = await session.request("POST", "/keys", json=new_key)
    body = await error_body(resp, 403, "forbidden")
    assert "X-CSRF-Token" in body["message"]
    resp = await session.request(
        "POST", "/keys", json=new_key, headers={"X-CSRF-Token": csrf + "x"}
    )
    await error_body(resp, 403, "forbidden")
    for method, path in (("DELETE", f"/keys/{minted.record.id}"), ("POST", "/clients")):
        resp = await session.request(method, path, json={})
        await error_body(resp, 403, "forbidden")
    assert len((await session.get("/keys"))["data"]) == 1, "nothing changed without the token"

    created = await Api(gw, {"X-CSRF-Token": csrf}).ok("POST", "/keys", 201, json=new_key)
    assert created["org_id"] == (await gw.org()).id
    assert await proxied_status(gw, created["key"]) == 200


async def test_a_member_session_is_forbidden(gw: Gateway) -> None:
    await gw.user("bob@example.com", role="member")
    csrf = await sign_in(gw, "bob@example.com")
    session = Api(gw, {"X-CSRF-Token": csrf})
    body = await error_body(await session.request("GET", "/keys"), 403, "forbidden")
    assert "owner or admin" in body["message"]
    resp = await session.request("POST", "/keys", json=MINIMAL_BODY[("POST", "/keys")])
    await error_body(resp, 403, "forbidden")


async def test_a_session_acts_only_for_its_organization(gw: Gateway) -> None:
    await gw.user("ada@example.com", role="owner")
    theirs = await gw.mint(["contacts:read"], org=OTHER_ORG)
    await sign_in(gw, "ada@example.com")
    session = Api(gw)
    assert (await session.get("/keys"))["data"] == []
    await not_found(await session.request("GET", f"/keys/{theirs.record.id}"))


# --- the OpenAPI document ------------------------------------------------------------


async def test_openapi_31_lists_every_operation_of_the_table(gw: Gateway) -> None:
    prefix = gw.settings.management.prefix
    resp = await gw.client.get(prefix + "/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    listed = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert listed == {(op.method, prefix + op.path) for op in OPERATIONS}
    for op in OPERATIONS:
        item = doc["paths"][prefix + op.path][op.method.lower()]
        assert item["operationId"] == operation_id(op.method, op.path)
        assert str(op.ok[0]) in item["responses"]
        assert {"400", "401", "403", "404"} <= set(item["responses"])
        assert ("requestBody" in item) == (op.body is not None)
        params = {(p["in"], p["name"]) for p in item["parameters"]}
        assert params == {("path", n) for n in PARAM.findall(op.path)} | {
            ("query", q.name) for q in op.query
        }
    assert len({item["operationId"] for p in doc["paths"].values() for item in p.values()}) == (
        len(OPERATIONS)
    )


async def test_openapi_references_resolve_and_scopes_come_from_the_catalog(gw: Gateway) -> None:
    doc = await (await gw.client.get(gw.settings.management.prefix + "/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    found = refs(doc)
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    scopes = schemas["KeyCreate"]["properties"]["scopes"]["items"]["enum"]
    assert sorted(scopes) == sorted(gw.settings.scopes)
    assert ADMIN_SCOPE in scopes


@pytest.mark.parametrize("depth", [33, 5000])
async def test_deeply_nested_json_is_a_400_validation_error(gw: Gateway, depth: int) -> None:
    """Nesting past 32 levels is refused before parsing: no RecursionError, no 500."""
    admin = await admin_api(gw)
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    resp = await admin.request(
        "POST", "/keys", data=body, headers={"Content-Type": "application/json"}
    )
    await error_body(resp, 400, "validation_error")
