"""Events and signed webhooks: each event produced by the action that causes it,
deliveries a Standard Webhooks receiver verifies, retries, the delivery log, and
targets refused. The receiver is a real aiohttp server on loopback, so the
tests allow http and private targets, as the README says an operator may."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from browser_helpers import open_tab
from cli_runner import cli_json
from conftest import AiohttpServer, Gateway, Spawned, free_port
from dashboard_pages import dashboard_url, looks_clean, sign_in
from nodes import cli_key, descendants, node_config, readme_block, write_node
from oauth_helpers import issued_tokens, token_request, with_config
from playwright.async_api import Browser
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

EVENTS = {"allow_http": True, "allow_private_targets": True, "retry_schedule": [0.3, 0.3, 0.3],
          "poll_interval": 0.1, "auth_failures_spike": 3, "expiry_scan_interval": 0.2}  # fmt: skip
LOOPBACK = with_config("loopback receiver", events=EVENTS,
                       routes=[{"path": "/echo/**", "upstream": "main"},
                               {"path": "/contacts", "upstream": "main",
                                "scopes": ["contacts:read"]},
                               {"path": "/paid/echo/**", "upstream": "main", "cost": 5,
                                "strip_prefix": "/paid"}])  # fmt: skip
DEADLINE = 10.0  # seconds for a delivery to arrive


@dataclass
class Receiver:
    url: str
    failures_left: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.received) >= count), DEADLINE
            )
        return self.received


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> Receiver:
    state: dict[str, Receiver] = {}

    async def receive(request: web.Request) -> web.Response:
        me = state["me"]
        body = await request.read()
        async with me.arrived:
            me.received.append((dict(request.headers), body))
            me.arrived.notify_all()
        if me.failures_left > 0:
            me.failures_left -= 1
            return web.Response(status=500, text="not now")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", receive)
    server = await aiohttp_server(app, host="127.0.0.1")
    state["me"] = Receiver(f"http://127.0.0.1:{server.port}/hooks")
    return state["me"]


class Admin:
    def __init__(self, gw: Gateway, secret: str) -> None:
        self.gw = gw
        self.headers = {"X-API-Key": secret}
        self.prefix = gw.settings.management.prefix

    async def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = await self.gw.client.request(
            method, self.prefix + path, headers=self.headers, **kwargs
        )
        body = await resp.json() if resp.status != 204 else None
        assert resp.status == status, body
        return body

    async def subscribe(self, url: str, events: list[str]) -> dict[str, Any]:
        created: dict[str, Any] = await self.call(
            "POST", "/subscriptions", 201, json={"url": url, "events": events}
        )
        return created

    async def event_types(self) -> list[str]:
        return [e["type"] for e in (await self.call("GET", "/events"))["data"]]

    async def until_event(self, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for event in (await self.call("GET", "/events"))["data"]:
                if event["type"] == kind:
                    return dict(event)
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {kind} event; saw {await self.event_types()}")


@pytest.fixture
async def admin(gw: Gateway) -> Admin:
    return Admin(gw, (await gw.mint(["gateway:admin"], name="admin")).secret)


@LOOPBACK
async def test_a_delivery_verifies_with_the_standard_webhooks_library(
    gw: Gateway, admin: Admin, receiver: Receiver
) -> None:
    sub = await admin.subscribe(receiver.url, ["key.created", "key.revoked"])
    assert sub["secret"].startswith("whsec_")
    assert "secret" not in await admin.call("GET", f"/subscriptions/{sub['id']}")
    created = await admin.call("POST", "/keys", 201,
                               json={"name": "zap", "scopes": ["contacts:read"]})  # fmt: skip
    (headers, body), *_ = await receiver.wait_for(1)
    payload = Webhook(sub["secret"]).verify(body, headers)
    assert payload["type"] == "key.created"
    assert payload["data"]["key_id"] == created["id"]
    assert created["key"] not in body.decode()  # never the secret
    # A forged body does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(body.replace(b"zap", b"zip"), headers)
    # After a rotation both secrets sign, for receivers that have not switched yet.
    rotated = await admin.call("POST", f"/subscriptions/{sub['id']}/secret")
    await admin.call("DELETE", f"/keys/{created['id']}", 204)
    (headers, body) = (await receiver.wait_for(2))[1]
    assert Webhook(rotated["secret"]).verify(body, headers)["type"] == "key.revoked"
    assert Webhook(sub["secret"]).verify(body, headers)["type"] == "key.revoked"


@LOOPBACK
async def test_a_failing_receiver_is_retried_and_every_attempt_is_logged(
    gw: Gateway, admin: Admin, receiver: Receiver
) -> None:
    receiver.failures_left = 2
    sub = await admin.subscribe(receiver.url, ["key.created"])
    await admin.call("POST", "/keys", 201, json={"name": "zap", "scopes": ["contacts:read"]})
    received = await receiver.wait_for(3)
    assert len({h["webhook-id"] for h, _ in received}) == 1  # one message, three attempts
    deadline = time.monotonic() + DEADLINE
    while True:
        log = (await admin.call("GET", f"/callbacks?subscription={sub['id']}"))["data"]
        if (log and log[0]["status"] == "succeeded") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    attempts = [(c["attempt"], c["status"], c["http_status"]) for c in reversed(log)]
    assert attempts == [(1, "failed", 500), (2, "failed", 500), (3, "succeeded", 204)]
    assert all(c["next_retry_at"] for c in log if c["status"] == "failed")
    assert all(c["latency_ms"] is not None and c["event_type"] == "key.created" for c in log)
    failed = (await admin.call("GET", "/callbacks?status=failed"))["data"]
    assert [c["attempt"] for c in failed] == [2, 1]
    # Asked by a person: delivered once more, now.
    again = await admin.call("POST", f"/callbacks/{log[0]['id']}/retry", 201)
    assert (again["attempt"], again["status"]) == (4, "pending")
    await receiver.wait_for(4)


async def test_private_and_plain_http_targets_are_refused(gw: Gateway) -> None:
    admin = Admin(gw, (await gw.mint(["gateway:admin"], name="admin")).secret)
    for url in ("http://hooks.example.com/in", "https://127.0.0.1/in", "https://10.1.2.3/in",
                "https://[::1]/in", "https://169.254.169.254/latest", "https://localhost/in",
                "ftp://hooks.example.com/"):  # fmt: skip
        refused = await admin.call(
            "POST", "/subscriptions", 400, json={"url": url, "events": ["key.created"]}
        )
        assert refused["field"] == "url", url


@LOOPBACK
async def test_each_event_comes_from_the_action_that_causes_it(
    gw: Gateway, admin: Admin, receiver: Receiver
) -> None:
    await admin.subscribe(receiver.url, ["key.created"])
    created = await admin.call("POST", "/keys", 201, json={
        "name": "limited", "scopes": ["contacts:read"],
        "limits": {"rate_limit": 2, "max_requests": 5}, "ttl": 2 * 86400,
    })  # fmt: skip
    await admin.call("POST", f"/keys/{created['id']}/rotate")
    assert (await admin.until_event("key.rotated"))["data"]["key_id"] == created["id"]
    expiring = await admin.until_event("key.expiring")
    assert expiring["data"]["days"] == 7
    fresh = await admin.call("POST", "/keys", 201, json={
        "name": "quota", "scopes": ["contacts:read"], "limits": {"max_requests": 5},
    })  # fmt: skip
    for _ in range(5):
        assert (await gw.client.get("/echo/x", headers={"X-API-Key": fresh["key"]})).status == 200
    assert (await admin.until_event("quota.warning"))["data"]["key_id"] == fresh["id"]
    assert (await admin.until_event("quota.exhausted"))["data"]["max_requests"] == 5

    limited = await admin.call("POST", "/keys", 201, json={
        "name": "rate", "scopes": ["contacts:read"], "limits": {"rate_limit": 1},
    })  # fmt: skip
    statuses = [(await gw.client.get("/echo/x", headers={"X-API-Key": limited["key"]})).status
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 429, 429]
    assert (await admin.until_event("rate_limit.exceeded"))["data"]["credential_id"] == (
        limited["id"])  # fmt: skip

    narrow = await gw.mint(["products:read"], name="narrow")
    for _ in range(4):
        resp = await gw.client.get("/contacts", headers={"X-API-Key": narrow.secret})
        assert resp.status == 403
    assert (await admin.until_event("auth.failures_spike"))["data"]["refusals"] >= 4

    await gw.store.wallet_credit((await gw.org()).id, 12, None, time.time())
    await admin.call("PATCH", "/wallet", json={"low_balance_threshold": 5})
    payer = await gw.mint(["contacts:read"], name="payer")
    for _ in range(2):
        resp = await gw.client.get("/paid/echo/x", headers={"X-API-Key": payer.secret})
        assert resp.status == 200
    low = await admin.until_event("wallet.low")
    assert low["data"] == {"balance": 2, "low_balance_threshold": 5}

    # OAuth: a grant given and withdrawn, a client secret rotated, a refresh token reused.
    await gw.user()
    client = await gw.oauth_client(org="acme")
    tokens = await issued_tokens(gw, client)
    grant = await admin.until_event("grant.created")
    assert grant["data"]["client_id"] == client.client.id
    first = await token_request(gw, client, grant_type="refresh_token",
                                refresh_token=tokens["refresh_token"])  # fmt: skip
    assert first.status == 200
    reused = await token_request(gw, client, grant_type="refresh_token",
                                 refresh_token=tokens["refresh_token"])  # fmt: skip
    assert reused.status == 400
    assert (await admin.until_event("refresh_token.reuse_detected"))["data"]["client_id"] == (
        client.client.id)  # fmt: skip
    await admin.call("DELETE", f"/grants/{grant['data']['grant_id']}", 204)
    await admin.until_event("grant.revoked")
    await admin.call("POST", f"/clients/{client.client.id}/secret")
    await admin.until_event("client.secret_rotated")
    await admin.call("POST", f"/keys/{created['id']}/rotate")
    types = set(await admin.event_types())
    assert {"key.created", "key.rotated", "key.expiring", "quota.warning", "quota.exhausted",
            "rate_limit.exceeded", "auth.failures_spike", "wallet.low", "grant.created",
            "grant.revoked", "client.secret_rotated",
            "refresh_token.reuse_detected"} <= types  # fmt: skip


async def test_an_event_outlives_a_crash_before_its_delivery(
    tmp_path: Path, upstream_url: str, receiver: Receiver, spawned: list[Spawned]
) -> None:
    """The node is killed (SIGKILL, workers and all) after the event is recorded and
    before any delivery; started again, it delivers."""
    config = node_config(upstream_url, free_port(), free_port())
    config["database"] = {"url": f"sqlite:///{tmp_path / 'node.db'}"}
    config["events"] = {**EVENTS, "poll_interval": 3600}  # the first life never delivers
    node = write_node(tmp_path, "node", config, workers=2)
    spawned.append(node)
    await cli_json(node.config_path, "org", "create", "acme")
    admin = {"X-API-Key": await cli_key(node.config_path, "admin", "gateway:admin")}
    await node.start()
    async with aiohttp.ClientSession() as http:
        url = f"{node.public}/_gateway/v1/subscriptions"
        async with http.post(
            url, headers=admin, json={"url": receiver.url, "events": ["key.created"]}
        ) as resp:
            sub = await resp.json()
            assert resp.status == 201, sub
        async with http.post(
            f"{node.public}/_gateway/v1/keys",
            headers=admin,
            json={"name": "zap", "scopes": ["contacts:read"]},
        ) as resp:
            created = await resp.json()
            assert resp.status == 201, created
    assert node.proc is not None
    for pid in {node.proc.pid, *descendants(node.proc.pid)}:
        os.kill(pid, signal.SIGKILL)
    node.proc.wait(timeout=10)
    assert receiver.received == []

    config["events"]["poll_interval"] = 0.1
    node = write_node(tmp_path, "node", config, workers=2)
    spawned.append(node)
    await node.start()
    (headers, body), *_ = await receiver.wait_for(1)
    payload = Webhook(sub["secret"]).verify(body, headers)
    assert (payload["type"], payload["data"]["key_id"]) == ("key.created", created["id"])
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 1  # two workers, one delivery


@LOOPBACK
async def test_the_readme_receiver_verifies_a_delivery(gw: Gateway, admin: Admin) -> None:
    port = free_port()
    sub = await admin.subscribe(f"http://127.0.0.1:{port}/hooks", ["key.created"])
    script = readme_block("### Events and webhooks", "python")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PORT": str(port), "WEBHOOK_SECRET": sub["secret"]},
    )  # fmt: skip
    try:
        await wait_until_listening(port)
        created = await admin.call("POST", "/keys", 201,
                                   json={"name": "zap", "scopes": ["contacts:read"]})  # fmt: skip
        assert child.stdout is not None
        line = b""
        while not line.startswith(b"key.created "):  # after aiohttp's banner
            line = await asyncio.wait_for(child.stdout.readline(), DEADLINE)
            assert line, "the receiver ended"
        assert created["id"] in line.decode()
    finally:
        child.kill()
        await child.wait()


async def wait_until_listening(port: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


@LOOPBACK
async def test_the_webhooks_page_adds_a_subscription_and_shows_its_deliveries(
    gw: Gateway, admin: Admin, receiver: Receiver, browser: Browser, tmp_path: Path
) -> None:
    user = await gw.user()
    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    await page.get_by_role("link", name="Webhooks").click()
    await page.wait_for_url(dashboard_url(gw, "/webhooks"))
    await page.fill("#url", receiver.url)
    await page.check('input[name=events][value="key.created"]')
    await page.get_by_role("button", name="Add subscription").click()
    shown = page.locator("#new-secret")
    await shown.wait_for(state="visible")
    secret = (await shown.inner_text()).strip()
    assert secret.startswith("whsec_")
    await looks_clean(tab, tmp_path / "webhooks-created.png")

    created = await admin.call(
        "POST", "/keys", 201, json={"name": "zap", "scopes": ["contacts:read"]}
    )
    (headers, body), *_ = await receiver.wait_for(1)
    assert Webhook(secret).verify(body, headers)["type"] == "key.created"
    row = page.locator("tr[data-callback-id]").first
    deadline = time.monotonic() + DEADLINE
    while await page.locator("tr[data-callback-id]").count() == 0 or "204" not in (
        await row.inner_text()
    ):
        assert time.monotonic() < deadline, "the delivery never showed"
        await page.reload()
    assert "key.created" in await row.inner_text()
    await looks_clean(tab, tmp_path / "webhooks-delivered.png")
    await row.get_by_role("button", name="Send again").click()
    await receiver.wait_for(2)
    assert await page.locator("tr[data-event-id]", has_text=created["id"]).count() == 1

    # Pause, rotate, resume, delete: each button does what the API would.
    (sub,) = (await admin.call("GET", "/subscriptions"))["data"]
    sub_row = page.locator(f'tr[data-subscription-id="{sub["id"]}"]')
    await sub_row.get_by_role("button", name="Pause").click()
    await sub_row.get_by_role("button", name="Resume").wait_for()
    assert (await admin.call("GET", f"/subscriptions/{sub['id']}"))["disabled"] is True
    await sub_row.get_by_role("button", name="Resume").click()
    await sub_row.get_by_role("button", name="Pause").wait_for()
    await sub_row.get_by_role("button", name="Rotate secret").click()
    await shown.wait_for(state="visible")
    assert (await shown.inner_text()).strip() not in ("", secret)
    await sub_row.get_by_role("button", name="Delete").click()
    await page.wait_for_url(dashboard_url(gw, "/webhooks"))
    assert await page.locator("tr[data-subscription-id]").count() == 0
    assert (await admin.call("GET", "/subscriptions"))["data"] == []
    # The secret was shown once, on the page that answered the form.
    assert secret not in await page.content()
