"""A third-party OAuth client we did not write (Authlib's httpx client) against the gateway.

Authlib builds the authorization URL (PKCE S256), exchanges the code, refreshes,
runs client_credentials with both secret methods and attaches the Bearer header
to API calls. The user's part (login and consent) is played over HTTP by an
httpx client that keeps cookies, reading the gateway's own HTML forms.

Endpoints come from the RFC 8414 document, validated by Authlib's model. The
fixture's ``public_url`` is the configured default while the test server listens
on a random port, so every advertised endpoint is re-based on ``gw.base_url``
(as a reverse proxy in front of the gateway would map them).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from conftest import PASSWORD, REDIRECT_URI, Gateway

from gateway.store.records import User

TIMEOUT = 15.0
WELL_KNOWN = "/.well-known/oauth-authorization-server"


# --- reading the gateway's HTML forms -----------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    selects: dict[str, list[str]] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class FormParser(HTMLParser):
    """Every <form> with its named inputs, selects (option values) and submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
            return
        if not self.forms:
            return
        form = self.forms[-1]
        if tag == "input" and a.get("name"):
            form.fields[a["name"]] = a.get("value", "")
        elif tag == "select" and a.get("name"):
            self._select = a["name"]
            form.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            form.selects[self._select].append(a.get("value", ""))
        elif tag == "button" and a.get("type", "submit") == "submit" and a.get("name"):
            form.buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_with(html: str, name: str) -> Form:
    """The one form holding a field, select or button called ``name``."""
    parser = FormParser()
    parser.feed(html)
    found = [
        f
        for f in parser.forms
        if name in f.fields or name in f.selects or any(n == name for n, _ in f.buttons)
    ]
    assert len(found) == 1, f"expected one form with {name!r}, found {len(found)}:\n{html}"
    return found[0]


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- discovery ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    issuer: str
    authorize: str
    token: str


async def discover(gw: Gateway) -> Endpoints:
    async with AsyncOAuth2Client(timeout=TIMEOUT) as anonymous:
        resp = await anonymous.request("GET", gw.base_url + WELL_KNOWN, withhold_token=True)
    assert resp.status_code == 200, resp.text
    metadata = AuthorizationServerMetadata(resp.json())
    metadata.validate()  # Authlib's own RFC 8414 checks
    issuer = metadata["issuer"]
    assert issuer == str(gw.settings.public_url).rstrip("/")
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(
        metadata["token_endpoint_auth_methods_supported"]
    )
    assert metadata["authorization_response_iss_parameter_supported"] is True

    def local(url: str) -> str:
        assert url.startswith(issuer + "/"), url
        return gw.base_url + url[len(issuer) :]

    return Endpoints(
        issuer, local(metadata["authorization_endpoint"]), local(metadata["token_endpoint"])
    )


# --- the user's part, over HTTP -----------------------------------------------


async def approve_as_user(url: str, email: str, org_id: str, action: str = "approve") -> str:
    """Open the authorization URL, sign in, consent for ``org_id``; the redirect Location."""
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as browser:
        resp = await browser.get(url)
        assert resp.status_code == 200, resp.text
        login = form_with(resp.text, "password")
        assert login.method == "post"
        resp = await browser.post(
            urljoin(str(resp.url), login.action),
            data={**login.fields, "email": email, "password": PASSWORD},
        )
        assert resp.status_code == 303, resp.text
        resp = await browser.get(urljoin(str(resp.url), resp.headers["Location"]))
        assert resp.status_code == 200, resp.text
        consent = form_with(resp.text, "org_id")
        assert consent.method == "post"
        assert org_id in consent.selects["org_id"]
        assert ("action", action) in consent.buttons
        resp = await browser.post(
            urljoin(str(resp.url), consent.action),
            data={**consent.fields, "org_id": org_id, "action": action},
        )
        assert resp.status_code == 302, resp.text
        return resp.headers["Location"]


def query_of(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


@dataclass
class Authorized:
    oauth: AsyncOAuth2Client
    endpoints: Endpoints
    token: dict[str, Any]
    user: User
    org_id: str
    client_id: str


@asynccontextmanager
async def authorized(gw: Gateway, auth_method: str) -> AsyncIterator[Authorized]:
    """Authlib completes the authorization code flow with PKCE S256."""
    endpoints = await discover(gw)
    user = await gw.user()
    org = await gw.org("acme")
    registered = await gw.oauth_client(name="Authlib app", public=auth_method == "none")
    assert (registered.secret is None) == (auth_method == "none")
    verifier = generate_token(64)
    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        client_secret=registered.secret,
        token_endpoint_auth_method=auth_method,
        scope="contacts:read",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        timeout=TIMEOUT,
    ) as oauth:
        url, state = oauth.create_authorization_url(endpoints.authorize, code_verifier=verifier)
        sent = query_of(url)
        assert sent["code_challenge"] == [s256(verifier)]
        assert sent["code_challenge_method"] == ["S256"]
        assert sent["state"] == [state]

        location = await approve_as_user(url, user.email, org.id)
        assert location.startswith(REDIRECT_URI + "?"), location
        back = query_of(location)
        assert back["state"] == [state]
        assert back["iss"] == [endpoints.issuer]
        assert len(back["code"]) == 1

        token = await oauth.fetch_token(
            endpoints.token,
            authorization_response=location,
            state=state,  # Authlib checks it against the response
            code_verifier=verifier,
        )
        yield Authorized(oauth, endpoints, dict(token), user, org.id, registered.client.id)


# --- tests --------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post", "none"])
async def test_authlib_authorization_code_with_pkce(gw: Gateway, auth_method: str) -> None:
    async with authorized(gw, auth_method) as done:
        token, oauth = done.token, done.oauth
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "contacts:read"
        assert token["access_token"].startswith("gwa_")
        assert token["refresh_token"].startswith("gwr_")
        assert 0 < token["expires_at"] - time.time() <= gw.settings.oauth.access_token_ttl + 5

        resp = await oauth.get(gw.base_url + "/contacts")
        assert resp.status_code == 200, resp.text
        assert resp.request.headers["Authorization"] == f"Bearer {token['access_token']}"

        resp = await oauth.get(gw.base_url + "/echo/x")
        assert resp.status_code == 200, resp.text
        echo = resp.json()
        assert header(echo, "X-Auth-Method") == ["oauth"]
        assert header(echo, "X-Org-Id") == [done.org_id]
        assert header(echo, "X-Client-Id") == [done.client_id]
        assert header(echo, "X-User-Id") == [done.user.id]
        assert header(echo, "X-Scopes") == ["contacts:read"]


async def test_authlib_code_cannot_be_redeemed_twice(gw: Gateway) -> None:
    endpoints = await discover(gw)
    user = await gw.user()
    org = await gw.org("acme")
    registered = await gw.oauth_client(name="Authlib app")
    verifier = generate_token(64)
    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        client_secret=registered.secret,
        scope="contacts:read",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        timeout=TIMEOUT,
    ) as oauth:
        url, state = oauth.create_authorization_url(endpoints.authorize, code_verifier=verifier)
        location = await approve_as_user(url, user.email, org.id)
        first = await oauth.fetch_token(
            endpoints.token, authorization_response=location, state=state, code_verifier=verifier
        )
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(
                endpoints.token,
                authorization_response=location,
                state=state,
                code_verifier=verifier,
            )
        assert refused.value.error == "invalid_grant"
        # A replayed code revokes what it yielded: the refresh token is dead now.
        with pytest.raises(OAuthError) as dead:
            await oauth.refresh_token(endpoints.token, refresh_token=first["refresh_token"])
        assert dead.value.error == "invalid_grant"


async def test_authlib_wrong_code_verifier_is_refused(gw: Gateway) -> None:
    endpoints = await discover(gw)
    user = await gw.user()
    org = await gw.org("acme")
    registered = await gw.oauth_client(name="Authlib app", public=True)
    verifier = generate_token(64)
    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        token_endpoint_auth_method="none",
        scope="contacts:read",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        timeout=TIMEOUT,
    ) as oauth:
        url, state = oauth.create_authorization_url(endpoints.authorize, code_verifier=verifier)
        location = await approve_as_user(url, user.email, org.id)
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(
                endpoints.token,
                authorization_response=location,
                state=state,
                code_verifier=generate_token(64),
            )
        assert refused.value.error == "invalid_grant"


async def test_authlib_deny_comes_back_as_access_denied(gw: Gateway) -> None:
    endpoints = await discover(gw)
    user = await gw.user()
    org = await gw.org("acme")
    registered = await gw.oauth_client(name="Authlib app")
    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        client_secret=registered.secret,
        scope="contacts:read",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        timeout=TIMEOUT,
    ) as oauth:
        url, state = oauth.create_authorization_url(
            endpoints.authorize, code_verifier=generate_token(64)
        )
        location = await approve_as_user(url, user.email, org.id, action="deny")
    back = query_of(location)
    assert location.startswith(REDIRECT_URI + "?"), location
    assert back["error"] == ["access_denied"]
    assert back["state"] == [state]
    assert back["iss"] == [endpoints.issuer]
    assert "code" not in back


async def test_authlib_refresh_rotates_and_refuses_the_old_token(gw: Gateway) -> None:
    async with authorized(gw, "client_secret_basic") as done:
        oauth, endpoints = done.oauth, done.endpoints
        old_access, old_refresh = done.token["access_token"], done.token["refresh_token"]

        new = await oauth.refresh_token(endpoints.token)
        assert new["refresh_token"].startswith("gwr_")
        assert new["refresh_token"] != old_refresh
        assert new["access_token"] != old_access
        assert new["scope"] == "contacts:read"
        assert oauth.token["access_token"] == new["access_token"]
        new_refresh = new["refresh_token"]

        resp = await oauth.get(gw.base_url + "/contacts")
        assert resp.status_code == 200, resp.text
        assert resp.request.headers["Authorization"] == f"Bearer {new['access_token']}"
        echo = (await oauth.get(gw.base_url + "/echo/x")).json()
        assert header(echo, "X-Auth-Method") == ["oauth"]
        assert header(echo, "X-Org-Id") == [done.org_id]

        with pytest.raises(OAuthError) as refused:
            await oauth.refresh_token(endpoints.token, refresh_token=old_refresh)
        assert refused.value.error == "invalid_grant"

        # RFC 9700 §4.14.2: replaying a spent refresh token revokes the whole family,
        # so the rotated refresh token is refused as well.
        with pytest.raises(OAuthError) as family:
            await oauth.refresh_token(endpoints.token, refresh_token=new_refresh)
        assert family.value.error == "invalid_grant"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_credentials(gw: Gateway, auth_method: str) -> None:
    endpoints = await discover(gw)
    org = await gw.org("globex")
    registered = await gw.oauth_client(
        name="Batch job",
        redirect_uris=(),
        grant_types=("client_credentials",),
        org="globex",
    )
    assert registered.secret is not None
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        client_secret=registered.secret,
        token_endpoint_auth_method=auth_method,
        scope="contacts:read",
        timeout=TIMEOUT,
        event_hooks={"request": [record]},
    ) as oauth:
        token = await oauth.fetch_token(endpoints.token, grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "contacts:read"
        assert "refresh_token" not in token

        # The token request really used the method asked for.
        [token_request] = sent
        body = parse_qs(token_request.content.decode())
        assert body["grant_type"] == ["client_credentials"]
        if auth_method == "client_secret_basic":
            assert token_request.headers["Authorization"].startswith("Basic ")
            assert "client_secret" not in body
        else:
            assert "Authorization" not in token_request.headers
            assert body["client_id"] == [registered.client.id]
            assert body["client_secret"] == [registered.secret]

        resp = await oauth.get(gw.base_url + "/contacts")
        assert resp.status_code == 200, resp.text
        assert resp.request.headers["Authorization"] == f"Bearer {token['access_token']}"

        echo = (await oauth.get(gw.base_url + "/echo/x")).json()
        assert header(echo, "X-Auth-Method") == ["oauth"]
        assert header(echo, "X-Org-Id") == [org.id]
        assert header(echo, "X-Client-Id") == [registered.client.id]
        assert header(echo, "X-User-Id") == []


async def test_authlib_client_credentials_with_a_wrong_secret_is_invalid_client(
    gw: Gateway,
) -> None:
    endpoints = await discover(gw)
    registered = await gw.oauth_client(
        name="Batch job", redirect_uris=(), grant_types=("client_credentials",), org="acme"
    )
    async with AsyncOAuth2Client(
        client_id=registered.client.id,
        client_secret="gws_" + "A" * 40,
        scope="contacts:read",
        timeout=TIMEOUT,
    ) as oauth:
        with pytest.raises(OAuthError) as refused:
            await oauth.fetch_token(endpoints.token, grant_type="client_credentials")
    assert refused.value.error == "invalid_client"
