"""The dashboard in a real headless Chromium, in front of the ``gw`` fixture.

Each test signs in through the dashboard's own redirect to the login page and
then works the pages as a person would. Credentials created in the browser are
then used from outside it, with aiohttp, the way an integration would. Every
page is checked for Content Security Policy complaints and saved as a
screenshot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser_helpers import TIMEOUT_MS, Tab, open_tab
from conftest import REDIRECT_URI, Gateway
from dashboard_pages import dashboard_url, looks_clean, sign_in
from oauth_helpers import (
    basic_auth,
    issued_tokens,
    oauth_error,
    proxied_status,
    refused_within,
    token_request,
)
from playwright.async_api import Browser, Page

REVOCATION_DEADLINE = 1.0  # seconds: the promise for revoked credentials
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=TIMEOUT_MS / 1000)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An integration's HTTP client: no cookies, nothing shared with the browser."""
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        yield session


# --- pages ----------------------------------------------------------------------------


async def create_key(page: Page, name: str) -> str:
    """Fill in and send the keys page's form; the secret it shows once."""
    await page.fill("#name", name)
    await page.check('input[name=scopes][value="contacts:read"]')
    await page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-secret")
    await shown.wait_for(state="visible")
    return (await shown.inner_text()).strip()


async def visit(tab: Tab, gw: Gateway, section: str, shot: Path) -> Page:
    response = await tab.page.goto(dashboard_url(gw, section))
    assert response is not None and response.status == 200, section
    await looks_clean(tab, shot)
    return tab.page


async def get_status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


# --- keys -----------------------------------------------------------------------------


async def test_admin_creates_uses_and_revokes_a_key(
    gw: Gateway, browser: Browser, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    user = await gw.user()
    tab = await open_tab(browser)
    page = tab.page
    await tab.page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=gw.base_url
    )
    await sign_in(tab, gw, user.email)
    await looks_clean(tab, tmp_path / "keys-empty.png")
    assert await page.inner_text("h1") == "Integrations & API"

    secret = await create_key(page, "Zapier")
    assert secret.startswith("gwk_live_"), secret
    await looks_clean(tab, tmp_path / "keys-created.png")

    copy = page.locator("button[data-copy=new-secret]")
    assert await copy.inner_text() == "Copy"
    await copy.click()
    await page.wait_for_function(
        "document.querySelector('button[data-copy]').textContent !== 'Copy'"
    )
    assert await copy.inner_text() == "Copied"
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    row = page.locator("tr[data-key-id]", has_text="Zapier")
    key_id = await row.get_attribute("data-key-id")
    assert key_id is not None
    stored = await gw.store.get_api_key(key_id)
    assert stored is not None
    assert (stored.name, stored.scopes, stored.org_id) == (
        "Zapier",
        ("contacts:read",),
        (await gw.org()).id,
    )

    contacts = gw.base_url + "/contacts"
    headers = {"X-API-Key": secret}
    assert await get_status(http, contacts, headers) == 200

    revoke = page.locator(f'tr[data-key-id="{key_id}"]').get_by_role("button", name="Revoke")
    async with page.expect_response(lambda r: r.url.endswith(f"/keys/{key_id}/revoke")):
        await revoke.click()
    revoked_at = time.monotonic()
    while (status := await get_status(http, contacts, headers)) != 401:
        assert status == 200, status
        elapsed = time.monotonic() - revoked_at
        assert elapsed < REVOCATION_DEADLINE, f"key still accepted {elapsed:.2f} s after revoke"
    await page.wait_for_url(dashboard_url(gw, "/keys"))
    await page.locator(f'tr[data-key-id="{key_id}"] .revoked').wait_for()
    assert await page.locator(f'tr[data-key-id="{key_id}"] button').count() == 0

    # Never shown again: not after the revoke, not on a reload, not on a fresh visit.
    for fresh in (False, True):
        await (page.goto(dashboard_url(gw, "/keys")) if fresh else page.reload())
        assert await page.locator("#new-secret").count() == 0
        assert secret not in await page.content()
        assert await page.locator(f'tr[data-key-id="{key_id}"]').count() == 1
    await looks_clean(tab, tmp_path / "keys-revoked.png")


async def test_reloading_after_creating_a_key_neither_shows_nor_creates_another(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    """The page showing a new secret is the answer to a POST; reloading it must not
    submit the form again (a second key, a second secret on screen)."""
    user = await gw.user()
    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    await page.fill("#name", "Zapier")
    await page.check('input[name=scopes][value="contacts:read"]')
    await page.get_by_role("button", name="Create key").click()
    secret = (await page.locator("#new-secret").inner_text()).strip()

    await page.reload()
    await looks_clean(tab, tmp_path / "keys-reloaded.png")
    keys = await gw.store.list_api_keys((await gw.org()).id)
    assert [k.name for k in keys] == ["Zapier"], "reloading the page created another key"
    assert await page.locator("#new-secret").count() == 0
    assert secret not in await page.content()


async def test_a_member_sees_no_key_management(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    existing = await gw.mint(["contacts:read"], name="ops key")
    member = await gw.user("bob@example.com", role="member")
    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, member.email)

    notice = "Only an owner or admin of this organization can manage its API keys."
    await page.get_by_text(notice).wait_for()
    assert await page.locator("tr[data-key-id]").count() == 0
    assert await page.get_by_role("button", name="Create key").count() == 0
    assert await page.get_by_role("button", name="Revoke").count() == 0
    assert existing.record.prefix not in await page.content()
    await looks_clean(tab, tmp_path / "member-keys.png")

    apps = await visit(tab, gw, "/apps", tmp_path / "member-apps.png")
    notice = "Only an owner or admin of this organization can manage its applications."
    await apps.get_by_text(notice).wait_for()
    assert await apps.get_by_role("button", name="Register").count() == 0

    response = await page.goto(dashboard_url(gw, "/usage"))
    assert response is not None and response.status == 403

    # Going around the page does not help: the same session, a valid CSRF token.
    await page.goto(dashboard_url(gw, "/keys"))
    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf
    request = page.context.request
    created = await request.post(
        dashboard_url(gw, "/keys"),
        form={"csrf_token": csrf, "name": "sneaky", "scopes": "contacts:read"},
    )
    assert created.status == 403, await created.text()
    revoked = await request.post(
        dashboard_url(gw, f"/keys/{existing.record.id}/revoke"), form={"csrf_token": csrf}
    )
    assert revoked.status == 403, await revoked.text()
    listing = await request.get(gw.base_url + gw.settings.management.prefix + "/keys")
    assert listing.status == 403
    assert (await listing.json())["error"] == "forbidden"

    keys = await gw.store.list_api_keys((await gw.org()).id)
    assert [(k.name, k.revoked_at) for k in keys] == [("ops key", None)]


# --- developer applications -----------------------------------------------------------


async def test_registering_an_app_shows_its_client_id_and_secret_once(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    user = await gw.user()
    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    await visit(tab, gw, "/apps", tmp_path / "apps-empty.png")

    await page.fill("#app-name", "Reports app")
    await page.fill("#redirect_uris", REDIRECT_URI)
    await page.check('input[name=scopes][value="contacts:read"]')
    await page.get_by_role("button", name="Register").click()
    await page.locator("#new-secret").wait_for(state="visible")
    client_id = (await page.inner_text("section.secret h2 code")).strip()
    secret = (await page.inner_text("#new-secret")).strip()
    assert await page.locator("button[data-copy=new-secret]").count() == 1
    await looks_clean(tab, tmp_path / "apps-created.png")

    found = await gw.store.get_client(client_id)
    assert found is not None
    assert found.client.name == "Reports app"
    assert found.client.redirect_uris == (REDIRECT_URI,)
    assert found.client.allowed_scopes == ("contacts:read",)
    assert found.client.owner_org_id == (await gw.org()).id

    # The secret shown is the client's: it authenticates (and the made-up code is
    # then refused), while a wrong one does not.
    token_path = gw.settings.oauth.paths.token
    form = {"grant_type": "authorization_code", "code": "made-up", "redirect_uri": REDIRECT_URI}
    right = await gw.client.post(
        token_path, data=form, headers={"Authorization": basic_auth(client_id, secret)}
    )
    await oauth_error(right, 400, "invalid_grant")
    wrong = await gw.client.post(
        token_path, data=form, headers={"Authorization": basic_auth(client_id, secret + "x")}
    )
    await oauth_error(wrong, 401, "invalid_client")

    await visit(tab, gw, "/apps", tmp_path / "apps-listed.png")
    assert await page.locator("#new-secret").count() == 0
    assert secret not in await page.content()
    row = page.locator("tr", has_text="Reports app")
    assert (await row.locator("code").first.inner_text()).strip() == client_id


# --- connected apps -------------------------------------------------------------------


async def test_connected_apps_lists_an_approved_app_and_revoke_ends_its_access(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    user = await gw.user()
    client = await gw.oauth_client(name="Zap")
    tokens: dict[str, Any] = await issued_tokens(gw, client, email=user.email)
    assert await proxied_status(gw, tokens["access_token"]) == 200

    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    await visit(tab, gw, "/connected", tmp_path / "connected.png")
    row = page.locator("tr", has_text="Zap")
    assert await row.count() == 1
    assert "acme" in await row.inner_text()
    assert await row.locator(".tag").all_inner_texts() == ["contacts:read"]

    await row.get_by_role("button", name="Revoke").click()
    await page.wait_for_url(dashboard_url(gw, "/connected"))
    await page.get_by_text("You have not connected any application.").wait_for()
    assert await page.locator("tr", has_text="Zap").count() == 0
    await refused_within(gw, tokens["access_token"], REVOCATION_DEADLINE)
    refresh = await token_request(
        gw, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    await oauth_error(refresh, 400, "invalid_grant")
    await looks_clean(tab, tmp_path / "connected-revoked.png")


# --- usage ----------------------------------------------------------------------------


async def test_usage_page_charts_traffic_and_lists_the_latest_errors(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    user = await gw.user()
    key = await gw.mint(["contacts:read"], name="reporting")
    headers = {"X-API-Key": key.secret}
    for _ in range(3):
        assert (await gw.client.get("/contacts", headers=headers)).status == 200
    assert (await gw.client.get("/admin/echo/x", headers=headers)).status == 403
    assert (await gw.client.get("/down/x", headers=headers)).status == 502

    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    await visit(tab, gw, "/usage", tmp_path / "usage.png")

    charts = page.locator("svg.chart")
    assert await charts.count() == 2
    for i in range(2):
        assert await charts.nth(i).locator("polyline").count() >= 1
        box = await charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 20
    legend = await page.locator("ul.legend").first.inner_text()
    assert f"reporting ({key.record.prefix}…) (5)" in legend
    assert "5 requests" in await page.locator("h2").first.inner_text()

    rows = page.locator("table tbody tr")
    cells = [await rows.nth(i).locator("td").all_inner_texts() for i in range(await rows.count())]
    label = f"reporting ({key.record.prefix}…)"
    # Newest first: time, route, status, reason, credential, client address.
    assert [c[1:] for c in cells] == [
        ["/down/**", "502", "bad_gateway", label, "127.0.0.1"],
        ["/admin/echo/**", "403", "insufficient_scope", label, "127.0.0.1"],
    ], cells


# --- test mode ------------------------------------------------------------------------


async def test_the_test_live_switch_shows_and_creates_one_environment_at_a_time(
    gw: Gateway, browser: Browser, tmp_path: Path
) -> None:
    user = await gw.user()
    live = await gw.mint(["contacts:read"], name="Live integration")
    tab = await open_tab(browser)
    page = tab.page
    await sign_in(tab, gw, user.email)
    assert await page.locator("#test-banner").count() == 0
    assert await page.locator(f'tr[data-key-id="{live.record.id}"]').count() == 1

    await page.get_by_role("button", name="Test", exact=True).click()
    await page.wait_for_url(dashboard_url(gw, "/keys"))
    await page.locator("#test-banner").wait_for(state="visible")
    assert "Test mode" in await page.inner_text("#test-banner")
    assert await page.locator(f'tr[data-key-id="{live.record.id}"]').count() == 0
    secret = await create_key(page, "Sandbox")
    assert secret.startswith("gwk_test_"), secret
    await looks_clean(tab, tmp_path / "keys-test-mode.png")
    row = page.locator("tr[data-key-id]", has_text="Sandbox")
    key_id = await row.get_attribute("data-key-id")
    assert key_id is not None
    stored = await gw.store.get_api_key(key_id)
    assert stored is not None and stored.environment == "test"

    # The switch holds across pages, and Live shows live things only.
    await page.goto(dashboard_url(gw, "/usage"))
    await page.locator("#test-banner").wait_for(state="visible")
    await page.get_by_role("button", name="Live", exact=True).click()
    await page.wait_for_url(dashboard_url(gw, "/usage"))
    assert await page.locator("#test-banner").count() == 0
    await page.goto(dashboard_url(gw, "/keys"))
    assert await page.locator(f'tr[data-key-id="{key_id}"]').count() == 0
    assert await page.locator(f'tr[data-key-id="{live.record.id}"]').count() == 1
    await looks_clean(tab, tmp_path / "keys-live-mode.png")
