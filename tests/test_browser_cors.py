"""A single-page app in a real Chromium: served from one loopback origin, it runs the
authorization code flow with PKCE against the gateway, redeems the code at the
token endpoint and calls a CORS route with its token, all from the page's own
JavaScript. A page from another origin is blocked by the browser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from browser_helpers import open_tab
from conftest import PASSWORD, AiohttpServer, Gateway
from playwright.async_api import Browser

ROUTE = {"path": "/spa/**", "upstream": "main", "scopes": ["contacts:read"],
         "strip_prefix": "/spa", "cors": {"origins": []}}  # fmt: skip

START = """<!doctype html><title>SPA</title><h1>SPA</h1><script>
(async () => {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const b64url = (b) => btoa(String.fromCharCode(...new Uint8Array(b)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const verifier = b64url(bytes);
  const challenge = b64url(await crypto.subtle.digest("SHA-256",
                                                     new TextEncoder().encode(verifier)));
  sessionStorage.setItem("verifier", verifier);
  const url = new URL(GATEWAY + "/oauth/authorize");
  url.search = new URLSearchParams({response_type: "code", client_id: CLIENT_ID,
    redirect_uri: location.origin + "/callback", scope: "contacts:read", state: "s1",
    code_challenge: challenge, code_challenge_method: "S256"});
  location.assign(url);
})();
</script>"""

CALLBACK = """<!doctype html><title>SPA</title><pre id="result">working</pre><script>
(async () => {
  const out = document.getElementById("result");
  try {
    const code = new URLSearchParams(location.search).get("code");
    const tokenResponse = await fetch(GATEWAY + "/oauth/token", {method: "POST", body:
      new URLSearchParams({grant_type: "authorization_code", code, client_id: CLIENT_ID,
        redirect_uri: location.origin + "/callback",
        code_verifier: sessionStorage.getItem("verifier")})});
    const token = await tokenResponse.json();
    const api = await fetch(GATEWAY + "/spa/echo/from-the-browser",
                            {headers: {Authorization: "Bearer " + token.access_token}});
    out.textContent = JSON.stringify({token: token.access_token, status: api.status,
                                      echo: await api.json()});
  } catch (error) {
    out.textContent = JSON.stringify({error: String(error)});
  }
})();
</script>"""

FOREIGN = """<!doctype html><title>Elsewhere</title><pre id="result">working</pre><script>
(async () => {
  const out = document.getElementById("result");
  try {
    const api = await fetch(GATEWAY + "/spa/echo/x",
                            {headers: {Authorization: "Bearer " + TOKEN}});
    out.textContent = JSON.stringify({status: api.status});
  } catch (error) {
    out.textContent = JSON.stringify({error: String(error)});
  }
})();
</script>"""


async def page_server(
    aiohttp_server: AiohttpServer, pages: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """A static server of ``pages`` (path -> HTML): its origin, and the constants
    (name -> value) each page's script is given when served."""
    values: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        html = pages[request.path]
        script = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in values.items())
        return web.Response(text=html.replace("<script>", "<script>\n" + script, 1),
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    for path in pages:
        app.router.add_get(path, serve)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}", values


@pytest.fixture
async def spa(aiohttp_server: AiohttpServer) -> tuple[str, dict[str, str]]:
    return await page_server(aiohttp_server, {"/": START, "/callback": CALLBACK})


@pytest.fixture
def config(config: dict[str, Any], spa: tuple[str, dict[str, str]]) -> dict[str, Any]:
    route = json.loads(json.dumps(ROUTE))
    route["cors"]["origins"] = [spa[0]]
    config["routes"].insert(0, route)
    return config


async def result(tab_page: Any) -> dict[str, Any]:
    await tab_page.wait_for_function(
        "document.getElementById('result') && "
        "document.getElementById('result').textContent !== 'working'"
    )
    found: dict[str, Any] = json.loads(await tab_page.inner_text("#result"))
    return found


async def test_a_single_page_app_completes_pkce_and_calls_a_cors_route_from_the_browser(
    gw: Gateway, browser: Browser, spa: tuple[str, dict[str, str]], aiohttp_server: AiohttpServer
) -> None:
    spa_origin, spa_values = spa
    user = await gw.user()
    app = await gw.oauth_client(name="SPA", public=True, redirect_uris=(spa_origin + "/callback",),
                                scopes=("contacts:read",))  # fmt: skip
    spa_values.update({"GATEWAY": gw.base_url, "CLIENT_ID": app.client.id})
    tab = await open_tab(browser)
    page = tab.page
    await page.goto(spa_origin + "/")
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_url(spa_origin + "/callback?**")
    got = await result(page)
    assert got.get("status") == 200, (got, tab.console)
    headers = {k.lower(): v for k, v in got["echo"]["headers"]}
    assert headers["x-org-id"] == (await gw.org()).id
    assert headers["x-client-id"] == app.client.id
    assert got["echo"]["path"] == "/echo/from-the-browser"

    # The same token, used by a page of another origin: the browser blocks the call.
    other, other_values = await page_server(aiohttp_server, {"/": FOREIGN})
    other_values.update({"GATEWAY": gw.base_url, "TOKEN": got["token"]})
    await page.goto(other + "/")
    blocked = await result(page)
    assert "error" in blocked and "Failed to fetch" in blocked["error"], blocked
