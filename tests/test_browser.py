"""A real headless Chromium signs in and consents on the gateway's own pages.

The redirect URI is a small aiohttp server on loopback that records what it
receives. Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright's
Python client; nothing is downloaded and nothing is skipped: without Chromium
these tests fail.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from browser_helpers import PNG_MAGIC, TIMEOUT_MS, open_tab
from conftest import PASSWORD, AiohttpServer, Gateway
from playwright.async_api import Browser, Page, Response
from yarl import URL

from gateway.store import Org

TIMEOUT_S = TIMEOUT_MS / 1000
WELL_KNOWN = "/.well-known/oauth-authorization-server"
CALLBACK_PAGE = "<!doctype html><title>Example app</title><h1>Back at the app</h1>"


# --- the client application's redirect URI -----------------------------------


@dataclass
class Callback:
    """The redirect-URI server: each request's query, and an event per arrival."""

    origin: str
    received: list[dict[str, list[str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return self.origin + "/callback"

    async def wait(self) -> dict[str, list[str]]:
        await asyncio.wait_for(self.arrived.wait(), TIMEOUT_S)
        assert len(self.received) == 1, self.received
        return self.received[0]


@pytest.fixture
async def callback(aiohttp_server: AiohttpServer) -> Callback:
    state: dict[str, Callback] = {}

    async def on_callback(request: web.Request) -> web.Response:
        cb = state["cb"]
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        cb.received.append(query)
        cb.arrived.set()
        return web.Response(text=CALLBACK_PAGE, content_type="text/html")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><p id=hello>frameable</p>", content_type="text/html"
        )

    async def framer(request: web.Request) -> web.Response:
        """A page on another origin that tries to frame ``src`` (clickjacking)."""
        src = escape(request.query["src"], quote=True)
        body = (
            "<!doctype html><title>Framer</title>"
            f'<iframe id="victim" src="{src}" width="600" height="600"></iframe>'
            '<iframe id="control" src="/hello" width="200" height="100"></iframe>'
        )
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/callback", on_callback)
    app.router.add_get("/hello", hello)
    app.router.add_get("/framer", framer)
    server = await aiohttp_server(app, host="127.0.0.1")
    cb = Callback(f"http://127.0.0.1:{server.port}")
    state["cb"] = cb
    return cb


# --- the browser --------------------------------------------------------------


# --- the OAuth parts ----------------------------------------------------------


@dataclass(frozen=True)
class Server:
    issuer: str
    authorize: str
    token: str


async def discover(gw: Gateway) -> Server:
    resp = await gw.client.get(WELL_KNOWN)
    assert resp.status == 200, await resp.text()
    meta: dict[str, Any] = await resp.json()
    issuer: str = meta["issuer"]

    def local(url: str) -> str:
        # public_url is the configured default; the test server has a random port.
        assert url.startswith(issuer + "/"), url
        return gw.base_url + url[len(issuer) :]

    return Server(issuer, local(meta["authorization_endpoint"]), local(meta["token_endpoint"]))


@dataclass(frozen=True)
class Request:
    url: str
    state: str
    verifier: str


def authorization_request(server: Server, client_id: str, redirect_uri: str) -> Request:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    url = URL(server.authorize).with_query(
        response_type="code",
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope="contacts:read",
        state=state,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    return Request(str(url), state, verifier)


async def sign_in(page: Page, url: str, email: str) -> None:
    """Open the authorization URL, sign in, and land on the consent page."""
    await page.goto(url)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_selector("select[name=org_id]", state="visible")


@dataclass
class Setup:
    server: Server
    client_id: str
    secret: str
    email: str
    acme: Org
    globex: Org


async def setup(gw: Gateway, callback: Callback) -> Setup:
    user = await gw.user(orgs=("acme", "globex"))
    registered = await gw.oauth_client(name="Browser app", redirect_uris=(callback.url,))
    assert registered.secret is not None
    return Setup(
        await discover(gw),
        registered.client.id,
        registered.secret,
        user.email,
        await gw.org("acme"),
        await gw.org("globex"),
    )


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


# --- tests --------------------------------------------------------------------


async def test_browser_signs_in_picks_the_second_org_and_approves(
    gw: Gateway, callback: Callback, browser: Browser
) -> None:
    s = await setup(gw, callback)
    request = authorization_request(s.server, s.client_id, callback.url)
    tab = await open_tab(browser)
    page = tab.page

    await sign_in(page, request.url, s.email)
    options = page.locator("select[name=org_id] option")
    assert await options.all_inner_texts() == ["acme", "globex"]
    assert [await o.get_attribute("value") for o in await options.all()] == [
        s.acme.id,
        s.globex.id,
    ]
    assert await page.input_value("select[name=org_id]") == s.acme.id  # the default
    assert await page.select_option("select[name=org_id]", index=1) == [s.globex.id]
    await page.get_by_role("button", name="Approve").click()

    got = await callback.wait()
    await page.wait_for_url(callback.url + "?**")
    assert await page.inner_text("h1") == "Back at the app"
    assert got["state"] == [request.state]
    assert got["iss"] == [s.server.issuer]
    assert "error" not in got
    [code] = got["code"]

    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        resp = await http.post(
            s.server.token,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": callback.url,
                "code_verifier": request.verifier,
                "client_id": s.client_id,
                "client_secret": s.secret,
            },
        )
        assert resp.status == 200, await resp.text()
        token = await resp.json()
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "contacts:read"

        resp = await http.get(
            gw.base_url + "/echo/x",
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
        assert resp.status == 200, await resp.text()
        echo = await resp.json()
    assert header(echo, "X-Org-Id") == [s.globex.id]
    assert header(echo, "X-Auth-Method") == ["oauth"]
    assert header(echo, "X-Client-Id") == [s.client_id]

    csp = [m for m in tab.console if "content security policy" in m.lower()]
    assert csp == [], tab.console


async def test_browser_deny_returns_access_denied_with_state(
    gw: Gateway, callback: Callback, browser: Browser
) -> None:
    s = await setup(gw, callback)
    request = authorization_request(s.server, s.client_id, callback.url)
    tab = await open_tab(browser)

    await sign_in(tab.page, request.url, s.email)
    await tab.page.get_by_role("button", name="Deny").click()

    got = await callback.wait()
    await tab.page.wait_for_url(callback.url + "?**")
    assert got["error"] == ["access_denied"]
    assert got["state"] == [request.state]
    assert got["iss"] == [s.server.issuer]
    assert "code" not in got


def directives(csp: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


async def test_consent_page_cannot_be_framed_has_no_script_and_keeps_its_styles(
    gw: Gateway, callback: Callback, browser: Browser, tmp_path: Path
) -> None:
    s = await setup(gw, callback)
    request = authorization_request(s.server, s.client_id, callback.url)
    tab = await open_tab(browser)
    page = tab.page

    def is_consent(response: Response) -> bool:
        return response.url.startswith(s.server.authorize) and response.request.method == "GET"

    await page.goto(request.url)
    await page.get_by_label("Email").fill(s.email)
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_response(is_consent) as consent_info:
        await page.get_by_role("button", name="Sign in").click()
    consent = await consent_info.value
    await page.wait_for_selector("select[name=org_id]", state="visible")
    assert consent.status == 200

    # Cannot be framed, by either header.
    headers = await consent.all_headers()
    assert headers["x-frame-options"] == "DENY"
    policy = directives(headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert "script-src" not in policy  # so default-src 'none' forbids every script
    [style_src] = policy["style-src"]
    assert style_src.startswith("'nonce-") and style_src.endswith("'")
    nonce = style_src[len("'nonce-") : -1]

    # No script at all: no <script>, no inline handler, no javascript: URL.
    html = await consent.text()
    assert "<script" not in html.lower()
    assert await page.locator("script").count() == 0
    handlers: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll("*")].flatMap(
             (el) => [...el.attributes].map((a) => a.name + "=" + a.value)
           ).filter((a) => a.startsWith("on") || a.includes("javascript:"))"""
    )
    assert handlers == []

    # The nonce'd stylesheet applied.
    assert await page.evaluate("document.querySelector('style').nonce") == nonce
    body_bg = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert body_bg == "rgb(244, 245, 247)"
    approve = page.get_by_role("button", name="Approve")
    assert await approve.evaluate("(b) => getComputedStyle(b).backgroundColor") == (
        "rgb(31, 94, 255)"
    )
    main_width = await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth")
    assert main_width == "448px"

    assert await tab.csp_violations() == []
    csp = [m for m in tab.console if "content security policy" in m.lower()]
    assert csp == [], tab.console

    shot = tmp_path / "consent.png"
    await page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)

    # A page on another origin, in the same signed-in browser, tries to frame the
    # consent page: Chromium refuses, while an ordinary page frames fine.
    framer = await page.context.new_page()
    framer_console: list[str] = []
    framer.on("console", lambda m: framer_console.append(m.text))
    await framer.goto(str(URL(callback.origin + "/framer").with_query(src=request.url)))
    await framer.wait_for_load_state("load")
    control = framer.frame_locator("#control")
    assert await control.locator("#hello").inner_text() == "frameable"
    victim_element = await framer.wait_for_selector("#victim")
    assert victim_element is not None
    victim = await victim_element.content_frame()
    assert victim is not None
    assert await victim.locator("select[name=org_id]").count() == 0
    assert await victim.locator("button").count() == 0
    assert not victim.url.startswith(gw.base_url), victim.url
    refusals = [m for m in framer_console if "frame-ancestors" in m or "X-Frame-Options" in m]
    assert refusals, framer_console
