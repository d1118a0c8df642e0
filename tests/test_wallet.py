"""Metered routes: the organization's wallet pays for each successful call.

The upstream records every request it receives, so "refused and not
forwarded" is checked where it matters: at the upstream. Balances and the
ledger are read the way an integrator would, through the management API with
a ``gateway:admin`` key; the CLI is run as a real subprocess on the same
database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.typedefs import Handler
from cli_runner import assert_refused, cli_json, run_cli, write_config
from conftest import AiohttpServer, Gateway

from gateway.pipeline.idempotency import KEPT_BODY_MAX
from gateway.store import Org
from upstream_example import create_app as create_upstream

COST = 5
ECHO_ROUTE = "/paid/echo/**"
FAIL_ROUTE = "/paidfail/status/{code}"
PAID_ROUTES: list[dict[str, Any]] = [
    {"path": ECHO_ROUTE, "scopes": ["contacts:read"], "upstream": "main", "cost": COST,
     "strip_prefix": "/paid"},
    {"path": FAIL_ROUTE, "scopes": ["contacts:read"], "upstream": "main", "cost": COST,
     "strip_prefix": "/paidfail"},
    {"path": "/paiddown/**", "scopes": ["contacts:read"], "upstream": "down", "cost": COST,
     "strip_prefix": "/paiddown"},
    {"path": "/paidslow/slow", "scopes": ["contacts:read"], "upstream": "slow", "cost": COST,
     "strip_prefix": "/paidslow"},
    {"path": "/paidbytes/bytes/{n}", "scopes": ["contacts:read"], "upstream": "main",
     "cost": COST, "strip_prefix": "/paidbytes"},
]  # fmt: skip


# --- a recording upstream and the paid routes -----------------------------------------


@pytest.fixture
def upstream_seen() -> list[str]:
    """Every path the upstream received, in order."""
    return []


@pytest.fixture
async def upstream_url(aiohttp_server: AiohttpServer, upstream_seen: list[str]) -> str:
    app = create_upstream()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        upstream_seen.append(request.path)
        return await handler(request)

    app.middlewares.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    config["routes"] = [*PAID_ROUTES, *config["routes"]]
    return config


# --- reading the wallet as an integrator ----------------------------------------------


@dataclass
class Ledger:
    """The organization's wallet seen through the management API."""

    gw: Gateway
    org: Org
    admin_key: str

    async def admin(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = await self.gw.client.request(
            method,
            self.gw.settings.management.prefix + path,
            headers={"X-API-Key": self.admin_key},
            **kwargs,
        )
        body: dict[str, Any] = await resp.json()
        assert resp.status in (200, 201), (resp.status, body)
        return body

    async def balance(self) -> int:
        body = await self.admin("GET", "/wallet")
        assert body["org_id"] == self.org.id
        balance: int = body["balance"]
        return balance

    async def entries(self) -> list[dict[str, Any]]:
        """Newest first."""
        data: list[dict[str, Any]] = (await self.admin("GET", "/wallet/transactions"))["data"]
        return data

    async def kinds(self) -> list[tuple[str, int, int]]:
        """(kind, amount, balance_after) per entry, oldest first."""
        return [
            (e["kind"], e["amount"], e["balance_after"]) for e in reversed(await self.entries())
        ]

    async def credit(self, amount: int) -> None:
        await self.gw.store.wallet_credit(self.org.id, amount, "test top-up", time.time())

    def audit(self) -> None:
        """Straight from the database: the ledger adds up and nothing went below zero."""
        [(balance,)] = self.gw.db_rows(
            f"SELECT balance FROM wallets WHERE org_id = '{self.org.id}'"
        )
        [(total, lowest)] = self.gw.db_rows(
            "SELECT SUM(amount), MIN(balance_after) FROM wallet_transactions "
            f"WHERE org_id = '{self.org.id}'"
        )
        assert total == balance
        assert lowest >= 0


@pytest.fixture
async def ledger(gw: Gateway) -> Ledger:
    admin = await gw.mint(["gateway:admin"], name="admin")
    return Ledger(gw, await gw.org(), admin.secret)


async def call(
    gw: Gateway, key: str, path: str, headers: dict[str, str] | None = None
) -> ClientResponse:
    resp = await gw.client.get(path, headers={"X-API-Key": key, **(headers or {})})
    await resp.read()
    return resp


async def payment_required(resp: ClientResponse, message: str) -> None:
    body = await resp.json()
    assert resp.status == 402, body
    assert body == {"error": "payment_required", "message": message}


NO_FUNDS = "The organization's wallet cannot pay for this call."
NO_PAID_REQUESTS_LEFT = "This key has used all of its paid requests."
SPENDING_LIMIT = "This key has reached its spending limit."


# --- charging -------------------------------------------------------------------------


async def test_paid_call_debits_exactly_the_cost(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)
    assert await ledger.balance() == 100

    resp = await call(gw, key.secret, "/paid/echo/charged")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["path"] == "/echo/charged"
    assert upstream_seen == ["/echo/charged"]

    assert await ledger.balance() == 100 - COST
    debit, credit = await ledger.entries()
    assert credit["kind"] == "credit" and credit["amount"] == 100
    assert debit["kind"] == "debit"
    assert debit["amount"] == -COST
    assert debit["balance_after"] == 100 - COST
    assert debit["route"] == ECHO_ROUTE
    assert debit["credential_id"] == key.record.id
    assert debit["request_id"] == resp.headers["X-Request-Id"]
    ledger.audit()

    # A route without a cost is free.
    resp = await call(gw, key.secret, "/echo/free")
    assert resp.status == 200
    assert await ledger.balance() == 100 - COST


@pytest.mark.parametrize("funds", [0, COST - 1], ids=["empty", "short"])
async def test_unfunded_call_gets_402_and_is_not_forwarded(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str], funds: int
) -> None:
    key = await gw.mint(["contacts:read"])
    if funds:
        await ledger.credit(funds)

    resp = await call(gw, key.secret, "/paid/echo/unfunded")
    await payment_required(resp, NO_FUNDS)
    assert resp.headers["Cache-Control"] == "no-store"
    assert upstream_seen == []
    assert await ledger.balance() == funds
    assert [e["kind"] for e in await ledger.entries()] == (["credit"] if funds else [])

    # The same key still works where nothing is charged.
    resp = await call(gw, key.secret, "/echo/free")
    assert resp.status == 200
    assert upstream_seen == ["/echo/free"]


async def test_balance_never_goes_below_zero_under_concurrency(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(10 * COST)

    responses = await asyncio.gather(*(call(gw, key.secret, f"/paid/echo/{i}") for i in range(30)))
    statuses = Counter(r.status for r in responses)
    assert statuses == {200: 10, 402: 20}, statuses

    served = sorted(f"/echo/{i}" for i, r in enumerate(responses) if r.status == 200)
    assert sorted(upstream_seen) == served  # the 20 refused calls never left the gateway
    assert await ledger.balance() == 0
    kinds = await ledger.kinds()
    assert kinds[0] == ("credit", 10 * COST, 10 * COST)
    assert [k[:2] for k in kinds[1:]] == [("debit", -COST)] * 10
    assert [k[2] for k in kinds[1:]] == list(range(9 * COST, -1, -COST))
    ledger.audit()


# --- refunds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/paidfail/status/404", 404),
        ("/paidfail/status/500", 500),
        ("/paiddown/x", 502),  # nothing listens on the upstream's port
        ("/paidslow/slow?delay=3", 504),  # the upstream answers after its timeout
    ],
    ids=["upstream-404", "upstream-500", "unreachable", "timeout"],
)
async def test_failed_call_is_refunded(gw: Gateway, ledger: Ledger, path: str, status: int) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)

    resp = await call(gw, key.secret, path)
    assert resp.status == status, await resp.text()

    assert await ledger.balance() == 100
    assert await ledger.kinds() == [
        ("credit", 100, 100),
        ("debit", -COST, 100 - COST),
        ("refund", COST, 100),
    ]
    refund, debit, _ = await ledger.entries()
    for entry in (debit, refund):
        assert entry["credential_id"] == key.record.id
        assert entry["request_id"] == resp.headers["X-Request-Id"]
        assert entry["route"] is not None
    assert refund["route"] == debit["route"]
    # The key's own counters are given back too.
    got = await ledger.admin("GET", f"/keys/{key.record.id}")
    assert (got["paid_requests"], got["spent"]) == (0, 0)
    ledger.audit()


# --- Idempotency-Key ------------------------------------------------------------------


async def post(gw: Gateway, key: str, path: str, body: bytes | Any, idem: str) -> ClientResponse:
    resp = await gw.client.post(
        path, data=body, headers={"X-API-Key": key, "Idempotency-Key": idem}
    )
    await resp.read()
    return resp


async def test_a_retry_gets_the_first_answer_replayed_without_reaching_the_upstream(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)
    csv = b"id,name\r\n1,Ada\r\n"

    first = await post(gw, key.secret, "/paid/echo/import", csv, "order-1")
    assert first.status == 200, await first.text()
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(2):
        retry = await post(gw, key.secret, "/paid/echo/import", csv, "order-1")
        assert retry.status == 200
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert await retry.read() == await first.read()
        assert retry.headers["Content-Type"] == first.headers["Content-Type"]
        assert retry.headers["X-Request-Id"] != first.headers["X-Request-Id"]

    # A streamed (chunked) body with the same bytes is the same request.
    async def chunks() -> Any:
        yield csv[:5]
        yield csv[5:]

    streamed = await post(gw, key.secret, "/paid/echo/import", chunks(), "order-1")
    assert streamed.status == 200 and streamed.headers["Idempotent-Replayed"] == "true"
    assert upstream_seen == ["/echo/import"]
    assert await ledger.balance() == 100 - COST
    assert [k for k, _, _ in await ledger.kinds()] == ["credit", "debit"]

    # Another key (the idempotency key, not the API key) is another call.
    resp = await post(gw, key.secret, "/paid/echo/import", csv, "order-2")
    assert resp.status == 200 and "Idempotent-Replayed" not in resp.headers
    assert await ledger.balance() == 100 - 2 * COST

    # A call that failed was refunded, so its retry is forwarded and charged (once).
    third = {"X-API-Key": key.secret, "Idempotency-Key": "order-3"}
    resp = await gw.client.get("/paidfail/status/503", headers=third)
    assert resp.status == 503
    assert await ledger.balance() == 100 - 2 * COST
    for _ in range(2):
        resp = await gw.client.get("/paid/echo/order", headers=third)
        assert resp.status == 200
    assert await ledger.balance() == 100 - 3 * COST
    assert upstream_seen == ["/echo/import", "/echo/import", "/status/503", "/echo/order"]

    # An over-long key is refused before anything is charged or forwarded.
    resp = await call(gw, key.secret, "/paid/echo/order", {"Idempotency-Key": "k" * 201})
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_request"
    assert len(upstream_seen) == 4
    assert await ledger.balance() == 100 - 3 * COST
    ledger.audit()


async def test_a_reused_idempotency_key_with_another_body_is_refused_unforwarded(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    """Six different files sent with one key: one import, one debit, five 422s."""
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)
    files = [f"id,name\r\n{n},Customer {n}\r\n".encode() for n in range(6)]
    responses = [await post(gw, key.secret, "/paid/echo/import", f, "batch-7") for f in files]

    assert responses[0].status == 200
    for resp in responses[1:]:
        assert resp.status == 422
        assert await resp.json() == {
            "error": "idempotency_key_reused",
            "message": "This Idempotency-Key was already used for a different request.",
        }
    assert upstream_seen == ["/echo/import"]
    assert await ledger.balance() == 100 - COST
    # The same key on another path or method is refused before the body is read.
    resp = await post(gw, key.secret, "/paid/echo/other", files[0], "batch-7")
    assert resp.status == 422
    assert upstream_seen == ["/echo/import"]
    ledger.audit()


async def test_a_retry_while_the_first_call_is_in_flight_is_409(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)
    slow = {"Idempotency-Key": "slow-1"}
    first = asyncio.create_task(call(gw, key.secret, "/paidslow/slow?delay=0.45", slow))
    await asyncio.sleep(0.2)  # the upstream answers after 0.45 s (its timeout is 0.5 s)
    retry = await call(gw, key.secret, "/paidslow/slow?delay=0.45", slow)
    assert retry.status == 409
    assert (await retry.json())["error"] == "idempotency_key_in_use"
    assert (await first).status == 200
    assert upstream_seen == ["/slow"]
    assert await ledger.balance() == 100 - COST


async def test_an_answer_too_large_to_keep_is_not_sent_again(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(100)
    big = {"Idempotency-Key": "big-1"}
    first = await call(gw, key.secret, f"/paidbytes/bytes/{KEPT_BODY_MAX + 1}", big)
    assert first.status == 200
    retry = await call(gw, key.secret, f"/paidbytes/bytes/{KEPT_BODY_MAX + 1}", big)
    assert retry.status == 422
    assert (await retry.json())["error"] == "idempotency_answer_not_kept"
    assert upstream_seen == [f"/bytes/{KEPT_BODY_MAX + 1}"]
    assert await ledger.balance() == 100 - COST


async def test_idempotency_key_does_not_make_other_calls_free(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    """The key names one request to be retried, not a pass for every later call."""
    key = await gw.mint(["contacts:read"])
    await ledger.credit(COST)
    reused = {"Idempotency-Key": "same-every-time"}
    resp = await call(gw, key.secret, "/paid/echo/first", reused)
    assert resp.status == 200
    assert await ledger.balance() == 0

    # The wallet is empty: a different call must not go through on the old key.
    for i in range(3):
        resp = await call(gw, key.secret, f"/paid/echo/other-{i}", reused)
        assert resp.status != 200, f"call {i} was forwarded unpaid: {await resp.text()}"
    assert upstream_seen == ["/echo/first"]
    assert await ledger.balance() == 0


# --- per-key caps ---------------------------------------------------------------------


async def test_max_paid_requests_cap_refuses_with_402_and_is_not_forwarded(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    await ledger.credit(100)
    created = await ledger.admin(
        "POST",
        "/keys",
        json={"name": "capped", "scopes": ["contacts:read"], "limits": {"max_paid_requests": 2}},
    )
    assert created["limits"]["max_paid_requests"] == 2
    secret: str = created["key"]

    for i in range(2):
        resp = await call(gw, secret, f"/paid/echo/{i}")
        assert resp.status == 200
    resp = await call(gw, secret, "/paid/echo/over")
    await payment_required(resp, NO_PAID_REQUESTS_LEFT)
    assert upstream_seen == ["/echo/0", "/echo/1"]
    assert await ledger.balance() == 100 - 2 * COST  # the wallet could pay; the key may not

    got = await ledger.admin("GET", f"/keys/{created['id']}")
    assert (got["paid_requests"], got["spent"]) == (2, 2 * COST)

    # Raising the cap lets the key pay again.
    patched = await ledger.admin(
        "PATCH", f"/keys/{created['id']}", json={"limits": {"max_paid_requests": 3}}
    )
    assert patched["limits"]["max_paid_requests"] == 3
    resp = await call(gw, secret, "/paid/echo/again")
    assert resp.status == 200
    await payment_required(await call(gw, secret, "/paid/echo/over"), NO_PAID_REQUESTS_LEFT)
    assert await ledger.balance() == 100 - 3 * COST


async def test_refunded_call_does_not_use_up_the_cap(gw: Gateway, ledger: Ledger) -> None:
    await ledger.credit(100)
    created = await ledger.admin(
        "POST",
        "/keys",
        json={"name": "one", "scopes": ["contacts:read"], "limits": {"max_paid_requests": 1}},
    )
    secret: str = created["key"]
    assert (await call(gw, secret, "/paidfail/status/500")).status == 500
    assert (await call(gw, secret, "/paid/echo/ok")).status == 200
    await payment_required(await call(gw, secret, "/paid/echo/no"), NO_PAID_REQUESTS_LEFT)
    assert await ledger.balance() == 100 - COST


async def test_max_spend_cap_set_with_patch_refuses_with_402_and_is_not_forwarded(
    gw: Gateway, ledger: Ledger, upstream_seen: list[str]
) -> None:
    await ledger.credit(100)
    created = await ledger.admin(
        "POST", "/keys", json={"name": "spender", "scopes": ["contacts:read"]}
    )
    secret: str = created["key"]
    assert created["limits"]["max_spend"] is None
    assert (await call(gw, secret, "/paid/echo/0")).status == 200

    patched = await ledger.admin(
        "PATCH", f"/keys/{created['id']}", json={"limits": {"max_spend": 2 * COST + 2}}
    )
    assert patched["limits"]["max_spend"] == 2 * COST + 2
    assert (await call(gw, secret, "/paid/echo/1")).status == 200  # 10 of 12 spent
    resp = await call(gw, secret, "/paid/echo/2")  # 15 would pass 12
    await payment_required(resp, SPENDING_LIMIT)
    assert upstream_seen == ["/echo/0", "/echo/1"]
    assert await ledger.balance() == 100 - 2 * COST

    # Clearing the cap (null) lifts it.
    cleared = await ledger.admin(
        "PATCH", f"/keys/{created['id']}", json={"limits": {"max_spend": None}}
    )
    assert cleared["limits"]["max_spend"] is None
    assert (await call(gw, secret, "/paid/echo/3")).status == 200
    assert await ledger.balance() == 100 - 3 * COST


# --- usage counts ---------------------------------------------------------------------


async def test_paid_calls_are_counted_in_stats(gw: Gateway, ledger: Ledger) -> None:
    key = await gw.mint(["contacts:read"])
    await ledger.credit(3 * COST)
    assert (await call(gw, key.secret, "/paidfail/status/500")).status == 500  # refunded
    for i in range(3):
        assert (await call(gw, key.secret, f"/paid/echo/{i}")).status == 200
    assert (await call(gw, key.secret, "/paid/echo/broke")).status == 402  # wallet empty
    assert (await call(gw, key.secret, "/echo/free")).status == 200

    stats = await ledger.admin("GET", "/stats", params={"group_by": "route"})
    assert stats["paid_requests"] == 3
    by_route = {g["group"]: g for g in stats["groups"]}
    assert by_route[ECHO_ROUTE]["requests"] == 4
    assert by_route[ECHO_ROUTE]["paid_requests"] == 3
    assert by_route[ECHO_ROUTE]["errors"] == 1
    assert by_route[FAIL_ROUTE]["paid_requests"] == 0
    assert by_route[FAIL_ROUTE]["errors"] == 1
    assert by_route["/echo/**"]["paid_requests"] == 0

    by_key = await ledger.admin("GET", "/stats", params={"group_by": "key"})
    [mine] = [g for g in by_key["groups"] if g["group"] == key.record.id]
    assert mine["paid_requests"] == 3


# --- the CLI --------------------------------------------------------------------------


async def test_cli_wallet_credit_and_show(
    gw: Gateway, ledger: Ledger, config: dict[str, Any], tmp_path: Path
) -> None:
    config_path = write_config(tmp_path / "gateway.yaml", config)
    org = ledger.org
    assert await cli_json(config_path, "wallet", "credit", "acme", "50") == {
        "org_id": org.id,
        "environment": "live",
        "balance": 50,
    }
    credited = await cli_json(config_path, "wallet", "credit", org.id, "25", "--note", "invoice 7")
    assert credited == {"org_id": org.id, "environment": "live", "balance": 75}
    assert await ledger.balance() == 75
    # The test wallet is another wallet: its credits never reach the live one.
    tested = await cli_json(config_path, "wallet", "credit", "acme", "9", "--environment", "test")
    assert tested == {"org_id": org.id, "environment": "test", "balance": 9}
    assert await ledger.balance() == 75

    key = await gw.mint(["contacts:read"])
    resp = await call(gw, key.secret, "/paid/echo/cli")
    assert resp.status == 200

    shown = await cli_json(config_path, "wallet", "show", "acme")
    assert shown["org_id"] == org.id
    assert shown["balance"] == 75 - COST
    debit, second, first = shown["transactions"]
    assert (debit["kind"], debit["amount"], debit["balance_after"]) == ("debit", -COST, 70)
    assert debit["route"] == ECHO_ROUTE
    assert debit["credential_id"] == key.record.id
    assert debit["request_id"] == resp.headers["X-Request-Id"]
    assert (second["kind"], second["amount"], second["note"]) == ("credit", 25, "invoice 7")
    assert (first["kind"], first["amount"], first["balance_after"]) == ("credit", 50, 50)
    assert shown["transactions"] == await ledger.entries()

    human = await run_cli(config_path, "wallet", "show", "acme")
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == f"acme: balance {75 - COST}"


@pytest.mark.parametrize(
    ("amount", "needle"),
    [
        ("0", "amount"),
        ("-5", "amount"),
        ("abc", "amount"),
        ("2.5", "amount"),
        (str(10**12 + 1), "amount"),
    ],
)
async def test_cli_wallet_credit_refuses_a_bad_amount(
    gw: Gateway, ledger: Ledger, config: dict[str, Any], tmp_path: Path, amount: str, needle: str
) -> None:
    config_path = write_config(tmp_path / "gateway.yaml", config)
    result = await run_cli(config_path, "wallet", "credit", "acme", amount, "--json")
    assert_refused(result, needle)
    assert await ledger.balance() == 0
    assert await ledger.entries() == []


async def test_cli_wallet_refuses_an_unknown_org(
    gw: Gateway, config: dict[str, Any], tmp_path: Path
) -> None:
    config_path = write_config(tmp_path / "gateway.yaml", config)
    assert_refused(await run_cli(config_path, "wallet", "credit", "nope", "10", "--json"), "nope")
    assert_refused(await run_cli(config_path, "wallet", "show", "nope", "--json"), "nope")
