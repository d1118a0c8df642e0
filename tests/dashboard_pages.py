"""Working the dashboard's pages in Chromium as a person would: signing in, and
checking each page shown has no Content Security Policy complaint."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from browser_helpers import PNG_MAGIC, Tab
from conftest import PASSWORD, Gateway


async def sign_in(tab: Tab, gw: Gateway, email: str) -> None:
    """Open /dashboard, get sent to the login page, sign in, land on the keys page."""
    page = tab.page
    await page.goto(gw.base_url + gw.settings.dashboard.path)
    landed = urlsplit(page.url)
    assert landed.path == gw.settings.oauth.paths.login, page.url
    assert parse_qs(landed.query)["next"] == [gw.settings.dashboard.path]
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(dashboard_url(gw, "/keys"))


def dashboard_url(gw: Gateway, section: str) -> str:
    return gw.base_url + gw.settings.dashboard.path + section


async def looks_clean(tab: Tab, shot: Path) -> None:
    """No CSP complaint on the page just shown, and a non-empty screenshot of it."""
    assert await tab.csp_violations() == []
    csp = [m for m in tab.console if "content security policy" in m.lower()]
    assert csp == [], tab.console
    await tab.page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC), shot
