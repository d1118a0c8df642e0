"""Drive the OAuth pages and endpoints the way a browser and a client app would.

Shared by the OAuth test modules (and importable by any other): PKCE pairs,
hidden-field parsing, the login-and-consent dance, token requests, and a
``with_config`` marker that patches the raw config before ``gw`` is built.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

import pytest
from aiohttp import ClientResponse, encode_basic_auth
from conftest import PASSWORD, REDIRECT_URI, Gateway
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.oauth.clients import RegisteredClient

STATE = "st-8f3a"
READ_WRITE = "contacts:read contacts:write"
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
ORG_OPTION = re.compile(r'<option value="([^"]+)">([^<]*)</option>')
ERROR_TEXT = re.compile(r'<p class="error" role="alert">([^<]*)</p>')


# --- config ------------------------------------------------------------------


def with_config(label: str | None = None, /, **patch: Any) -> pytest.MarkDecorator:
    """Patch the raw config for one test: conftest's ``config`` fixture merges
    ``config_patch`` into it (``@with_config(oauth={"code_ttl": 1})``)."""
    label = label or ",".join(f"{k}={v}" for k, v in patch.items())
    return pytest.mark.parametrize("config_patch", [patch], ids=[label])


# --- PKCE ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str


def pkce_pair() -> Pkce:
    """RFC 7636 §4.1-§4.2: a 43-character verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return Pkce(verifier, challenge)


# --- reading pages and redirects ---------------------------------------------


def hidden_fields(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in HIDDEN_INPUT.findall(page)}


def org_options(page: str) -> list[tuple[str, str]]:
    """(org id, org name) for each option of the consent page's organization picker."""
    return [(html.unescape(v), html.unescape(n)) for v, n in ORG_OPTION.findall(page)]


def page_error(page: str) -> str | None:
    found = ERROR_TEXT.search(page)
    return html.unescape(found.group(1)) if found else None


def is_login_page(page: str) -> bool:
    return 'name="password"' in page


def is_consent_page(page: str) -> bool:
    return 'name="request_id"' in page


def redirect_params(location: str) -> dict[str, str]:
    """The query of a redirect to the client; a repeated name fails the test."""
    pairs = parse_qsl(urlsplit(location).query, keep_blank_values=True)
    params = dict(pairs)
    assert len(params) == len(pairs), f"repeated parameter in {location}"
    return params


def issuer(gw: Gateway) -> str:
    return str(gw.settings.public_url).rstrip("/")


# --- the authorization endpoint and the pages ---------------------------------


def authorize_query(
    client_id: str,
    *,
    pkce: Pkce | None = None,
    scope: str | None = "contacts:read",
    state: str | None = STATE,
    redirect_uri: str = REDIRECT_URI,
    prompt: str | None = "consent",
    **extra: str,
) -> dict[str, str]:
    """An authorization request. ``prompt=consent`` by default, so that each flow of a
    test meets the consent page; ``prompt=None`` lets a standing approval answer."""
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri}
    if prompt is not None:
        query["prompt"] = prompt
    if scope is not None:
        query["scope"] = scope
    if state is not None:
        query["state"] = state
    if pkce is not None:
        query["code_challenge"] = pkce.challenge
        query["code_challenge_method"] = "S256"
    query.update(extra)
    return query


async def get_authorize(
    gw: Gateway, query: Mapping[str, str] | list[tuple[str, str]]
) -> ClientResponse:
    return await gw.client.get(
        gw.settings.oauth.paths.authorize, params=query, allow_redirects=False
    )


async def post_login(
    gw: Gateway, page: str, email: str, password: str = PASSWORD, **override: str
) -> ClientResponse:
    """Submit the login form found on ``page`` (its hidden fields, then ``override``)."""
    form = {**hidden_fields(page), "email": email, "password": password, **override}
    return await gw.client.post(gw.settings.oauth.paths.login, data=form, allow_redirects=False)


async def consent_page(
    gw: Gateway,
    query: Mapping[str, str],
    *,
    email: str = "ada@example.com",
    password: str = PASSWORD,
) -> str:
    """GET authorize → (POST login → GET authorize) → the consent page's HTML."""
    resp = await get_authorize(gw, query)
    page = await resp.text()
    assert resp.status == 200, page
    if is_login_page(page):
        login = await post_login(gw, page, email, password)
        assert login.status == 303, await login.text()
        resp = await gw.client.get(login.headers["Location"], allow_redirects=False)
        page = await resp.text()
        assert resp.status == 200, page
    assert is_consent_page(page), page
    return page


async def post_consent(
    gw: Gateway, page: str, *, action: str = "approve", org_id: str | None = None
) -> ClientResponse:
    """Submit the consent form on ``page``; by default the first organization offered."""
    options = org_options(page)
    form = {
        **hidden_fields(page),
        "action": action,
        "org_id": org_id if org_id is not None else options[0][0],
    }
    return await gw.client.post(gw.settings.oauth.paths.authorize, data=form, allow_redirects=False)


async def login_and_consent(
    gw: Gateway,
    query: Mapping[str, str],
    *,
    email: str = "ada@example.com",
    password: str = PASSWORD,
    action: str = "approve",
    org_id: str | None = None,
) -> str:
    """GET authorize → POST login → GET authorize → POST consent; the redirect Location.

    Skips the login when the test client's session is already signed in.
    """
    page = await consent_page(gw, query, email=email, password=password)
    resp = await post_consent(gw, page, action=action, org_id=org_id)
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def authorization_code(
    gw: Gateway,
    client: RegisteredClient,
    *,
    pkce: Pkce | None = None,
    scope: str | None = "contacts:read",
    email: str = "ada@example.com",
    org_id: str | None = None,
) -> str:
    location = await login_and_consent(
        gw,
        authorize_query(client.client.id, pkce=pkce, scope=scope),
        email=email,
        org_id=org_id,
    )
    params = redirect_params(location)
    assert "code" in params, location
    return params["code"]


# --- the token, revocation and introspection endpoints -----------------------


async def post_as(
    gw: Gateway, path: str, client: RegisteredClient, data: Mapping[str, str]
) -> ClientResponse:
    """POST a form, authenticated with HTTP Basic (confidential) or client_id (public)."""
    if client.secret is None:
        return await gw.client.post(path, data={"client_id": client.client.id, **data})
    auth = basic_auth(client.client.id, client.secret)
    return await gw.client.post(path, data=dict(data), headers={"Authorization": auth})


def basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then HTTP Basic."""
    return encode_basic_auth(quote_plus(client_id), quote_plus(secret))


async def token_request(gw: Gateway, client: RegisteredClient, **params: str) -> ClientResponse:
    return await post_as(gw, gw.settings.oauth.paths.token, client, params)


async def redeem(
    gw: Gateway, client: RegisteredClient, code: str, pkce: Pkce | None, **extra: str
) -> ClientResponse:
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if pkce is not None:
        params["code_verifier"] = pkce.verifier
    return await token_request(gw, client, **{**params, **extra})


async def issued_tokens(
    gw: Gateway,
    client: RegisteredClient,
    *,
    scope: str | None = "contacts:read",
    email: str = "ada@example.com",
    org_id: str | None = None,
) -> dict[str, Any]:
    """The whole flow with PKCE: the §5.1 token response body."""
    pkce = pkce_pair()
    code = await authorization_code(gw, client, pkce=pkce, scope=scope, email=email, org_id=org_id)
    resp = await redeem(gw, client, code, pkce)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def refreshed(
    gw: Gateway, client: RegisteredClient, refresh_token: str, **extra: str
) -> dict[str, Any]:
    """A successful refresh_token grant (§6): the new token response body."""
    resp = await token_request(
        gw, client, grant_type="refresh_token", refresh_token=refresh_token, **extra
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


async def oauth_error(resp: ClientResponse, status: int, error: str) -> dict[str, Any]:
    """Assert an RFC 6749 §5.2 error body; return it."""
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert resp.headers["Cache-Control"] == "no-store"
    return body


async def revoke(gw: Gateway, client: RegisteredClient, token: str) -> ClientResponse:
    return await post_as(gw, gw.settings.oauth.paths.revoke, client, {"token": token})


async def introspect(gw: Gateway, client: RegisteredClient, token: str) -> ClientResponse:
    return await post_as(gw, gw.settings.oauth.paths.introspect, client, {"token": token})


# --- using tokens ---------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def echoed(echo: dict[str, Any], name: str) -> list[str]:
    """Every value of header ``name`` the upstream received."""
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


async def proxied_status(gw: Gateway, token: str, path: str = "/contacts") -> int:
    resp = await gw.client.get(path, headers=bearer(token))
    await resp.read()
    return resp.status


async def refused_within(gw: Gateway, token: str, seconds: float = 1.0) -> None:
    """Poll a proxied route until the token gets 401, failing after ``seconds``.

    A revocation reaches a cached credential through the revocation watcher
    (``cache.poll_interval``), so the promise is "within a second", not "at once".
    """
    started = time.monotonic()
    while True:
        status = await proxied_status(gw, token)
        elapsed = time.monotonic() - started
        if status == 401:
            return
        assert status == 200, status
        assert elapsed < seconds, f"token still accepted after {elapsed:.2f}s"
        await asyncio.sleep(0.05)


# --- signing keys ---------------------------------------------------------------


def write_key(path: Path, kind: str) -> None:
    """A new PEM private key: ``rsa`` (2048 bits) or ``ec`` (P-256)."""
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
