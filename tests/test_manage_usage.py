"""/stats, /errors and /wallet: what an organization's credentials did, as counted
by the gateway on the requests it decided."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Gateway
from manage_helpers import OTHER_ORG, Api, admin_api, api_key, error_body, validation_error, walk

from gateway.manage.schemas import ErrorEntry, Stats, WalletEntryOut

COST = 5
METERED = [
    {"path": "/paid/echo/**", "upstream": "main", "cost": COST, "strip_prefix": "/paid"},
    {"path": "/paid/status/{code}", "upstream": "main", "cost": COST, "strip_prefix": "/paid"},
]
LOCAL = "127.0.0.1"


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    config["routes"] = [*config["routes"], *METERED]
    return config


@pytest.fixture
async def admin(gw: Gateway) -> Api:
    return await admin_api(gw)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Counted:
    """One request as /stats should count it."""

    credential_id: str
    route: str
    status: int


GROUPING: dict[str, Callable[[Counted], str]] = {
    "key": lambda c: c.credential_id,
    "route": lambda c: c.route,
    "status": lambda c: str(c.status),
    "ip": lambda c: LOCAL,  # every test request comes from loopback
    "day": lambda c: today(),
}


class Ledger:
    """What a test sent; the expected /stats answer for any grouping."""

    def __init__(self) -> None:
        self.sent: list[Counted] = []

    def add(self, credential_id: str, route: str, status: int, times: int = 1) -> None:
        self.sent += [Counted(credential_id, route, status)] * times

    def totals(self) -> dict[str, int]:
        return {
            "requests": len(self.sent),
            "errors": sum(c.status >= 400 for c in self.sent),
            "paid_requests": 0,
        }

    def groups(self, by: str) -> list[dict[str, Any]]:
        label = GROUPING[by]
        requests = Counter(label(c) for c in self.sent)
        errors = Counter(label(c) for c in self.sent if c.status >= 400)
        return [
            {"group": g, "requests": n, "errors": errors[g], "paid_requests": 0}
            for g, n in sorted(requests.items())
        ]


async def send(gw: Gateway, secret: str | None, method: str, path: str, status: int) -> str:
    """One proxied request that must answer ``status``; its X-Request-Id."""
    headers = api_key(secret) if secret else {}
    body = {"name": "Ada"} if method == "POST" else None
    resp = await gw.client.request(method, path, headers=headers, json=body)
    assert resp.status == status, await resp.text()
    await resp.read()
    return resp.headers["X-Request-Id"]


# --- stats -------------------------------------------------------------------------


async def test_stats_count_what_the_organization_sent(gw: Gateway, admin: Api) -> None:
    first = await gw.mint(["contacts:read"], name="first")
    second = await gw.mint(["contacts:read"], name="second")
    theirs = await gw.mint(["contacts:read"], org=OTHER_ORG)
    ledger = Ledger()
    # (key, method, path, status, route label, times)
    traffic = [
        (first, "GET", "/contacts", 200, "/contacts", 3),
        (first, "POST", "/contacts", 403, "/contacts/**", 1),  # scope
        (second, "GET", "/contacts/nope", 404, "/contacts/{id}", 2),  # the upstream's 404
        (second, "GET", "/contacts", 200, "/contacts", 1),
        (second, "POST", "/contacts", 403, "/contacts/**", 2),
    ]
    for key, method, path, status, route, times in traffic:
        for _ in range(times):
            await send(gw, key.secret, method, path, status)
        ledger.add(key.record.id, route, status, times)
    for _ in range(4):
        await send(gw, theirs.secret, "GET", "/contacts", 200)
    await send(gw, None, "GET", "/contacts", 401)  # nobody's: not counted

    stats = await admin.get("/stats")
    Stats.model_validate(stats)
    assert stats == {"environment": "live", **ledger.totals(), "groups": []}
    assert ledger.totals() == {"requests": 9, "errors": 5, "paid_requests": 0}
    for group_by in ("key", "route", "status", "ip", "day"):
        # Every earlier /stats call of the admin key is itself a counted request.
        ledger.add(admin.credential_id, "manage:/stats", 200)
        stats = await admin.get("/stats", group_by=group_by)
        assert stats == {
            "environment": "live",
            **ledger.totals(),
            "groups": ledger.groups(group_by),
        }, group_by
        for total in ("requests", "errors", "paid_requests"):
            assert sum(g[total] for g in stats["groups"]) == stats[total], (group_by, total)

    their_stats = await (await admin_api(gw, OTHER_ORG)).get("/stats", group_by="key")
    assert their_stats["requests"] == 4 and their_stats["errors"] == 0
    assert [g["group"] for g in their_stats["groups"]] == [theirs.record.id]


async def test_stats_cover_the_days_asked_for(gw: Gateway, admin: Api) -> None:
    key = await gw.mint(["contacts:read"])
    for _ in range(2):
        await send(gw, key.secret, "GET", "/contacts", 200)

    async def counted(**params: str) -> int:
        groups = (await admin.get("/stats", group_by="key", **params))["groups"]
        return sum(g["requests"] for g in groups if g["group"] == key.record.id)

    day = datetime.now(UTC).date()
    yesterday = (day - timedelta(days=1)).isoformat()
    tomorrow = (day + timedelta(days=1)).isoformat()
    assert await counted() == 2
    assert await counted(to=today()) == 2
    assert await counted(**{"from": today(), "to": today()}) == 2
    assert await counted(**{"from": yesterday, "to": yesterday}) == 0
    assert await counted(**{"from": tomorrow, "to": tomorrow}) == 0
    assert await counted(**{"from": f"{yesterday}T00:00:00Z", "to": f"{today()}T23:59:59Z"}) == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("group_by", "month")], "group_by"),
        ([("group_by", "")], "group_by"),
        ([("group_by", "key"), ("group_by", "day")], "group_by"),
        ([("from", "2024-02-02"), ("to", "2024-02-01")], "from"),
        ([("from", "2024-13-01")], "from"),
        ([("from", "last week")], "from"),
        ([("to", "2024-02-30")], "to"),
        ([("to", "yesterday")], "to"),
        ([("to", "2024-01-01"), ("to", "2024-01-02")], "to"),
        ([("from", "2023-01-01"), ("to", "2024-12-31")], "from"),
        ([("from", "0001-01-01T00:00:00+01:00")], "from"),  # before year 1 in UTC
    ],
    ids=[
        "unknown-group", "empty-group", "group-twice", "from-after-to", "bad-month",
        "words", "bad-day", "words-to", "to-twice", "over-a-year", "out-of-range",
    ],
)  # fmt: skip
async def test_bad_stats_queries_name_the_parameter(
    admin: Api, query: list[tuple[str, str]], field: str
) -> None:
    await validation_error(await admin.request("GET", "/stats", params=query), field)


# --- errors --------------------------------------------------------------------------


async def test_errors_list_the_latest_failures_newest_first(gw: Gateway, admin: Api) -> None:
    reader = await gw.mint(["contacts:read"], name="reader")
    limited = {
        name: await admin.ok(
            "POST", "/keys", 201, json={"name": name, "scopes": ["contacts:read"], "limits": lim}
        )
        for name, lim in (
            ("office", {"allowed_ips": ["10.0.0.0/8"]}),
            ("slow", {"rate_limit": 1}),
            ("trial", {"max_requests": 1}),
        )
    }
    theirs = await gw.mint(["contacts:read"], org=OTHER_ORG)
    expected: list[dict[str, Any]] = []

    def failed(
        request_id: str, method: str, route: str, status: int, reason: str, key: str
    ) -> None:
        expected.append({
            "request_id": request_id, "method": method, "route": route, "status": status,
            "reason": reason, "credential_id": key, "client_ip": LOCAL,
        })  # fmt: skip

    rid = await send(gw, reader.secret, "POST", "/contacts", 403)
    failed(rid, "POST", "/contacts/**", 403, "insufficient_scope", reader.record.id)
    rid = await send(gw, limited["office"]["key"], "GET", "/contacts", 403)
    failed(rid, "GET", "/contacts", 403, "ip_not_allowed", limited["office"]["id"])
    await send(gw, limited["slow"]["key"], "GET", "/contacts", 200)
    rid = await send(gw, limited["slow"]["key"], "GET", "/contacts", 429)
    failed(rid, "GET", "/contacts", 429, "rate_limited", limited["slow"]["id"])
    await send(gw, limited["trial"]["key"], "GET", "/contacts", 200)
    rid = await send(gw, limited["trial"]["key"], "GET", "/contacts", 429)
    failed(rid, "GET", "/contacts", 429, "quota_exceeded", limited["trial"]["id"])
    resp = await Api(gw, api_key(reader.secret)).request("GET", "/keys")
    await error_body(resp, 403, "forbidden")
    failed(resp.headers["X-Request-Id"], "GET", "manage:/keys", 403, "insufficient_scope",
           reader.record.id)  # fmt: skip
    await send(gw, theirs.secret, "POST", "/contacts", 403)  # another organization's
    await send(gw, "gwk_unknown", "GET", "/contacts", 401)  # nobody's

    listed = (await admin.get("/errors"))["data"]
    for entry in listed:
        ErrorEntry.model_validate(entry)
    assert [{k: v for k, v in e.items() if k != "at"} for e in listed] == expected[::-1]
    stamps = [e["at"] for e in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert all(s.startswith(today()) for s in stamps)
    for limit in (1, 2, 5):
        assert await walk(admin, "/errors", limit) == listed, limit
    their_errors = (await (await admin_api(gw, OTHER_ORG)).get("/errors"))["data"]
    assert [e["credential_id"] for e in their_errors] == [theirs.record.id]


async def test_an_error_cursor_must_be_one_the_api_returned(admin: Api) -> None:
    # "wrI" is the cursor encoding of "²", which str.isdigit() accepts and int() refuses.
    for cursor in ("bm9wZQ", "wrI", "LTE"):  # "nope", "²", "-1"
        resp = await admin.request("GET", "/errors", params={"cursor": cursor})
        await validation_error(resp, "cursor")


# --- wallet --------------------------------------------------------------------------


async def test_the_wallet_shows_the_balance_and_every_change(gw: Gateway, admin: Api) -> None:
    acme = await gw.org()
    assert await admin.get("/wallet") == {"org_id": acme.id, "environment": "live", "balance": 0}
    assert await admin.get("/wallet/transactions") == {"data": [], "next_cursor": None}
    key = await gw.mint(["contacts:read"])
    unfunded = await gw.client.get("/paid/echo/a", headers=api_key(key.secret))
    await error_body(unfunded, 402, "payment_required")

    await gw.store.wallet_credit(acme.id, 12, "top-up", time.time())
    once = {**api_key(key.secret), "Idempotency-Key": "order-1"}
    first = await gw.client.get("/paid/echo/a", headers=once)
    assert first.status == 200
    retry = await gw.client.get("/paid/echo/a", headers=once)
    assert retry.status == 200, "a retry with the same Idempotency-Key is not charged again"
    failed = await send(gw, key.secret, "GET", "/paid/status/500", 500)  # refunded
    second = await send(gw, key.secret, "GET", "/paid/echo/b", 200)
    await error_body(
        await gw.client.get("/paid/echo/c", headers=api_key(key.secret)), 402, "payment_required"
    )

    assert await admin.get("/wallet") == {"org_id": acme.id, "environment": "live", "balance": 2}
    entries = (await admin.get("/wallet/transactions"))["data"]
    for entry in entries:
        WalletEntryOut.model_validate(entry)
    summary = [(e["kind"], e["amount"], e["balance_after"], e["route"], e["request_id"])
               for e in entries]  # fmt: skip
    assert summary == [
        ("debit", -COST, 2, "/paid/echo/**", second),
        ("refund", COST, 7, "/paid/status/{code}", failed),
        ("debit", -COST, 2, "/paid/status/{code}", failed),
        ("debit", -COST, 7, "/paid/echo/**", first.headers["X-Request-Id"]),
        ("credit", 12, 12, None, None),
    ]
    assert {e["credential_id"] for e in entries[:-1]} == {key.record.id}
    assert entries[-1]["note"] == "top-up"
    for limit in (1, 2):
        assert await walk(admin, "/wallet/transactions", limit) == entries
    shown = await admin.get(f"/keys/{key.record.id}")
    assert (shown["paid_requests"], shown["spent"]) == (2, 2 * COST)
    assert (await admin.get("/stats"))["paid_requests"] == 2

    theirs = await admin_api(gw, OTHER_ORG)
    assert (await theirs.get("/wallet"))["balance"] == 0
    assert (await theirs.get("/wallet/transactions"))["data"] == []


@pytest.mark.parametrize(
    ("limits", "reason"),
    [({"max_paid_requests": 1}, "max_paid_requests"), ({"max_spend": COST + 2}, "max_spend")],
)
async def test_a_keys_spending_caps_refuse_the_next_paid_call(
    gw: Gateway, admin: Api, limits: dict[str, int], reason: str
) -> None:
    await gw.store.wallet_credit((await gw.org()).id, 100, None, time.time())
    created = await admin.ok(
        "POST", "/keys", 201, json={"name": "capped", "scopes": ["contacts:read"], "limits": limits}
    )
    assert {k: created["limits"][k] for k in limits} == limits
    await send(gw, created["key"], "GET", "/paid/echo/a", 200)
    rid = await send(gw, created["key"], "GET", "/paid/echo/b", 402)
    await send(gw, created["key"], "GET", "/contacts", 200)  # unpaid routes still work
    assert (await admin.get("/wallet"))["balance"] == 100 - COST
    (error,) = (await admin.get("/errors"))["data"]
    assert (error["request_id"], error["reason"]) == (rid, reason)


async def test_a_wallet_cursor_must_be_one_the_api_returned(admin: Api) -> None:
    for cursor in ("bm9wZQ", "wrI"):  # "nope", "²"
        resp = await admin.request("GET", "/wallet/transactions", params={"cursor": cursor})
        await validation_error(resp, "cursor")
