"""Every page at desktop and at phone width, in Chromium: nothing spills out of the
screen, the pieces newcomers stumbled on read right, and each page's screenshot
is kept in docs/screenshots/ (the README shows the main ones)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import open_tab
from conftest import Gateway
from dashboard_pages import dashboard_url, looks_clean, sign_in
from nodes import ROOT
from oauth_helpers import authorize_query, bearer, issued_tokens
from playwright.async_api import Page

from gateway.oauth.clients import register_client

SHOTS = ROOT / "docs" / "screenshots"
WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}
PAGES = ("keys", "apps", "connected", "usage", "webhooks")


async def no_sideways_scroll(page: Page, name: str) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"{name}: the page is {width} px wide on a {viewport} px screen"


@pytest.fixture
async def populated(gw: Gateway) -> str:
    """Two organizations, a key and an app with the same traffic, an error: a page
    with everything on it. The signed-in user's email."""
    user = await gw.user(orgs=("acme", "globex"))
    key = await gw.mint(["contacts:read", "contacts:write", "products:read"], name="Zapier sync")
    await gw.org()
    app = await register_client(  # as `gateway client create --org acme` makes it
        gw.store, name="Reporting app", redirect_uris=("http://127.0.0.1:18999/callback",),
        scopes=["contacts:read"], catalog=gw.settings.scopes, org="acme",
    )  # fmt: skip
    tokens = await issued_tokens(gw, app)
    for headers in ({"X-API-Key": key.secret}, bearer(tokens["access_token"])):
        for _ in range(2):  # the same counts: two lines that must not hide each other
            assert (await gw.client.get("/contacts", headers=headers)).status == 200
    assert (await gw.client.get("/admin/echo/x", headers={"X-API-Key": key.secret})).status == 403
    return user.email


@pytest.mark.parametrize("width", list(WIDTHS))
async def test_every_page_reads_well_at_desktop_and_phone_width(
    gw: Gateway, browser: object, populated: str, width: str
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab = await open_tab(browser)  # type: ignore[arg-type]
    page = tab.page
    w, h = WIDTHS[width]
    await page.set_viewport_size({"width": w, "height": h})

    await page.goto(gw.base_url + gw.settings.oauth.paths.login)
    assert "Sign in to Gateway" in await page.inner_text("h1")
    await no_sideways_scroll(page, "login")
    await looks_clean(tab, SHOTS / f"login-{width}.png")
    await sign_in(tab, gw, populated)
    for section in PAGES:
        await page.goto(dashboard_url(gw, f"/{section}"))
        await no_sideways_scroll(page, section)
        await looks_clean(tab, SHOTS / f"{section}-{width}.png")

    # The organization switch: its button beside its select box, on one line.
    select = await page.locator("header select[name=org_id]").bounding_box()
    button = await page.get_by_role("button", name="Switch").bounding_box()
    assert select is not None and button is not None
    assert abs(select["y"] - button["y"]) < select["height"], (select, button)

    # Dates read as dates, the exact time on hover.
    await page.goto(dashboard_url(gw, "/keys"))
    created = page.locator("tr[data-key-id] time").first
    assert (await created.get_attribute("title") or "").endswith(" UTC")
    assert "T" not in await created.inner_text()

    # The app made with the CLI is listed; its tokens' traffic is labelled by its name.
    await page.goto(dashboard_url(gw, "/apps"))
    assert "Reporting app" in await page.inner_text("main")
    await page.goto(dashboard_url(gw, "/usage"))
    legend = await page.locator("ul.legend").first.inner_text()
    assert "Reporting app (app) (2)" in legend and "Zapier sync" in legend
    lines = page.locator("svg.chart").first.locator("polyline")
    widths = {await lines.nth(i).get_attribute("stroke-width") for i in range(await lines.count())}
    assert len(widths) == await lines.count() == 2  # equal counts, both lines visible
    labels = (
        await page.locator("svg.chart")
        .first.locator("text")
        .evaluate_all("texts => texts.map(t => t.textContent)")
    )
    ticks = [t for t in labels if "-" not in t]  # the y axis (days read MM-DD)
    assert ticks and all(t.isdigit() for t in ticks), labels  # whole requests only


async def test_the_consent_page_at_phone_width(gw: Gateway, browser: object) -> None:
    user = await gw.user(orgs=("acme", "globex"))
    client = await gw.oauth_client(name="Zap")
    tab = await open_tab(browser)  # type: ignore[arg-type]
    page = tab.page
    for width, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        query = "&".join(f"{k}={v}" for k, v in authorize_query(client.client.id).items())
        await page.goto(f"{gw.base_url}{gw.settings.oauth.paths.authorize}?{query}")
        if await page.locator("#password").count():
            assert "Zap" in await page.inner_text("main")  # who asks, on the login page
            await page.fill("#email", user.email)
            await page.fill("#password", "correct horse battery")
            await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_selector("select[name=org_id]")
        await no_sideways_scroll(page, "consent")
        await looks_clean(tab, SHOTS / f"consent-{width}.png")
        assert Path(SHOTS / f"consent-{width}.png").stat().st_size > 0
