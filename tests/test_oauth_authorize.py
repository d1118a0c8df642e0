"""The authorization endpoint, the login and consent pages, RFC 6749 §4.1.1-§4.1.2.

Errors about the client or its redirect_uri are pages, never redirects; every
other error goes back to the registered redirect_uri with ``error``, ``state``
and ``iss``. The pages refuse framing and caching and require the CSRF token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import ClientResponse
from conftest import PASSWORD, REDIRECT_URI, Gateway
from oauth_helpers import (
    STATE,
    authorize_query,
    consent_page,
    get_authorize,
    hidden_fields,
    is_consent_page,
    is_login_page,
    issued_tokens,
    issuer,
    login_and_consent,
    org_options,
    page_error,
    pkce_pair,
    post_consent,
    post_login,
    redirect_params,
    with_config,
)
from yarl import URL

from gateway.oauth.clients import RegisteredClient, disable_client
from gateway.store.records import User

Query = list[tuple[str, str]]


@pytest.fixture
async def ada(gw: Gateway) -> User:
    return await gw.user("ada@example.com", orgs=("acme", "globex"))


@pytest.fixture
async def zap(gw: Gateway) -> RegisteredClient:
    return await gw.oauth_client(name="Zap")


def code_count(gw: Gateway) -> int:
    return int(gw.db_rows("SELECT COUNT(*) FROM oauth_codes")[0][0])


async def assert_page(resp: ClientResponse, status: int) -> str:
    """One of our HTML pages: no redirect, no framing, no caching."""
    page = await resp.text()
    assert resp.status == status, page
    assert "Location" not in resp.headers
    assert resp.content_type == "text/html"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    return page


def assert_error_redirect(resp: ClientResponse, gw: Gateway, error: str) -> dict[str, str]:
    """§4.1.2.1 plus RFC 9207: back to the registered URI with error, state and iss."""
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    params = redirect_params(location)
    assert params["error"] == error, params
    assert params["state"] == STATE
    assert params["iss"] == issuer(gw)
    assert "code" not in params
    assert resp.headers["Cache-Control"] == "no-store"
    return params


# --- errors shown on our own page, never redirected ---------------------------


def good(client_id: str) -> Query:
    return list(authorize_query(client_id, pkce=pkce_pair()).items())


def replaced(query: Query, name: str, *values: str) -> Query:
    return [(k, v) for k, v in query if k != name] + [(name, v) for v in values]


REDIRECT_TRICKS = [
    REDIRECT_URI + "/x",  # prefix match
    REDIRECT_URI + "?extra=1",  # added query
    "HTTP://127.0.0.1:18999/callback",  # scheme case
    "http://127.0.0.1:18999/Callback",  # path case
    REDIRECT_URI + "/",  # trailing slash
    "http://evil@127.0.0.1:18999/callback",  # userinfo
    "http://127.0.0.1:18999@evil.example/callback",  # host hidden behind userinfo
    "http://127.0.0.1:18998/callback",  # another port
    "http://127.0.0.1/callback",  # port dropped
    "http://127.0.0.1:18999/x/../callback",  # dot segments
    "http://127.0.0.1:18999/callback#frag",  # fragment
    "http://localhost:18999/callback",  # another name for the same host
    "https://127.0.0.1:18999/callback",  # another scheme
]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda cid: replaced(good(cid), "client_id"), id="missing-client"),
        pytest.param(
            lambda cid: replaced(good(cid), "client_id", "client_0123456789abcdef"),
            id="unknown-client",
        ),
        pytest.param(lambda cid: replaced(good(cid), "client_id", cid, cid), id="repeated-client"),
        pytest.param(lambda cid: replaced(good(cid), "redirect_uri"), id="missing-redirect"),
        pytest.param(
            lambda cid: replaced(good(cid), "redirect_uri", "http://127.0.0.1:18999/other"),
            id="unregistered-redirect",
        ),
        pytest.param(
            lambda cid: replaced(good(cid), "redirect_uri", REDIRECT_URI, REDIRECT_URI),
            id="repeated-redirect",
        ),
        *(
            pytest.param(lambda cid, uri=uri: replaced(good(cid), "redirect_uri", uri), id=uri)
            for uri in REDIRECT_TRICKS
        ),
    ],
)
async def test_client_and_redirect_errors_are_pages_not_redirects(
    gw: Gateway, zap: RegisteredClient, build: Callable[[str], Query]
) -> None:
    resp = await get_authorize(gw, build(zap.client.id))
    page = await assert_page(resp, 400)
    assert "127.0.0.1:18999" not in page  # the page does not even link to the client
    assert code_count(gw) == 0


async def test_disabled_client_is_a_page_not_a_redirect(gw: Gateway, zap: RegisteredClient) -> None:
    await disable_client(gw.store, zap.client.id)
    resp = await get_authorize(gw, good(zap.client.id))
    page = await assert_page(resp, 400)
    assert page_error(page) == "This application is unknown or disabled."


# --- errors redirected to the validated redirect_uri --------------------------

S256 = pkce_pair().challenge
ERROR_REDIRECTS: list[tuple[str, dict[str, str | None], str]] = [
    ("response-type-token", {"response_type": "token"}, "unsupported_response_type"),
    ("unknown-scope", {"scope": "contacts:read nosuch:scope"}, "invalid_scope"),
    ("scope-beyond-client", {"scope": "contacts:read admin:all"}, "invalid_scope"),
    ("built-in-admin-scope", {"scope": "gateway:admin"}, "invalid_scope"),
    ("pkce-plain", {"code_challenge_method": "plain"}, "invalid_request"),
    ("pkce-no-method", {"code_challenge_method": None}, "invalid_request"),
    ("pkce-method-only", {"code_challenge": None}, "invalid_request"),
    ("pkce-short", {"code_challenge": "abc"}, "invalid_request"),
    ("pkce-padded", {"code_challenge": S256 + "="}, "invalid_request"),
    ("pkce-bad-alphabet", {"code_challenge": "+" + S256[1:]}, "invalid_request"),
]


@pytest.mark.parametrize(
    ("changes", "error"), [pytest.param(c, e, id=i) for i, c, e in ERROR_REDIRECTS]
)
async def test_request_errors_redirect_with_error_state_and_iss(
    gw: Gateway, zap: RegisteredClient, changes: dict[str, str | None], error: str
) -> None:
    query = dict(authorize_query(zap.client.id, pkce=pkce_pair()))
    for name, value in changes.items():
        if value is None:
            query.pop(name)
        else:
            query[name] = value
    assert_error_redirect(await get_authorize(gw, query), gw, error)


async def test_repeated_parameter_redirects_invalid_request(
    gw: Gateway, zap: RegisteredClient
) -> None:
    query = replaced(good(zap.client.id), "scope", "contacts:read", "contacts:write")
    assert_error_redirect(await get_authorize(gw, query), gw, "invalid_request")


async def test_public_client_must_send_a_pkce_challenge(gw: Gateway) -> None:
    app = await gw.oauth_client(public=True)
    resp = await get_authorize(gw, authorize_query(app.client.id))
    assert_error_redirect(resp, gw, "invalid_request")


async def test_confidential_client_may_omit_pkce_by_default(
    gw: Gateway, zap: RegisteredClient
) -> None:
    resp = await get_authorize(gw, authorize_query(zap.client.id))
    assert is_login_page(await assert_page(resp, 200))


@with_config(oauth={"require_pkce": "all"})
async def test_require_pkce_all_refuses_a_confidential_client_without_it(
    gw: Gateway, zap: RegisteredClient
) -> None:
    resp = await get_authorize(gw, authorize_query(zap.client.id))
    assert_error_redirect(resp, gw, "invalid_request")
    resp = await get_authorize(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    assert is_login_page(await assert_page(resp, 200))


async def test_omitted_scope_grants_the_default_scope(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    page = await consent_page(gw, authorize_query(zap.client.id, scope=None))
    assert "<code>contacts:read</code>" in page
    assert "contacts:write" not in page
    tokens = await issued_tokens(gw, zap, scope=None)
    assert tokens["scope"] == "contacts:read"


# --- the pages ----------------------------------------------------------------


async def test_login_and_consent_pages_refuse_framing_and_caching(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    resp = await get_authorize(gw, query)
    login = await assert_page(resp, 200)
    assert is_login_page(login)
    signed_in = await post_login(gw, login, "ada@example.com")
    assert signed_in.status == 303
    resp = await gw.client.get(signed_in.headers["Location"], allow_redirects=False)
    assert is_consent_page(await assert_page(resp, 200))
    # The consent form may redirect to the client's validated origin, and nowhere else.
    csp = resp.headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:18999;" in csp


def session_cookie(resp: ClientResponse, gw: Gateway) -> str:
    name = gw.settings.session.cookie_name
    found = [c for c in resp.headers.getall("Set-Cookie", ()) if c.startswith(name + "=")]
    assert len(found) == 1, resp.headers
    return found[0]


async def test_session_cookie_is_httponly_lax_and_not_secure_over_http(
    gw: Gateway, zap: RegisteredClient
) -> None:
    resp = await get_authorize(gw, good(zap.client.id))
    attributes = [a.strip().lower() for a in session_cookie(resp, gw).split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes
    assert "path=/" in attributes


@with_config(public_url="https://auth.example.com")
async def test_session_cookie_is_secure_for_an_https_public_url(
    gw: Gateway, zap: RegisteredClient
) -> None:
    resp = await get_authorize(gw, good(zap.client.id))
    attributes = [a.strip().lower() for a in session_cookie(resp, gw).split(";")[1:]]
    assert "secure" in attributes


async def test_consent_shows_client_every_org_and_every_scope(gw: Gateway, ada: User) -> None:
    app = await gw.oauth_client(name="Zap & <Sync>")
    scope = "contacts:read contacts:write"
    page = await consent_page(gw, authorize_query(app.client.id, pkce=pkce_pair(), scope=scope))
    assert "Zap &amp; &lt;Sync&gt;" in page
    assert "<Sync>" not in page
    orgs = {m.org.id: m.org.name for m in await gw.store.memberships(ada.id)}
    assert sorted(org_options(page)) == sorted(orgs.items())
    assert len(orgs) == 2
    for name, description in [
        ("contacts:read", "Read your contacts"),
        ("contacts:write", "Change your contacts"),
    ]:
        assert f"<li>{description} <code>{name}</code></li>" in page


@pytest.mark.parametrize("csrf", [None, "forged-token"], ids=["missing", "wrong"])
async def test_login_requires_the_csrf_token(
    gw: Gateway, ada: User, zap: RegisteredClient, csrf: str | None
) -> None:
    login = await (await get_authorize(gw, good(zap.client.id))).text()
    form = {**hidden_fields(login), "email": "ada@example.com", "password": PASSWORD}
    if csrf is None:
        del form["csrf_token"]
    else:
        form["csrf_token"] = csrf
    resp = await gw.client.post(gw.settings.oauth.paths.login, data=form, allow_redirects=False)
    page = await assert_page(resp, 400)
    assert page_error(page) == "Your session expired; try again."
    # Still signed out: the authorization request shows the login form again.
    again = await get_authorize(gw, good(zap.client.id))
    assert is_login_page(await assert_page(again, 200))


@pytest.mark.parametrize("csrf", [None, "forged-token"], ids=["missing", "wrong"])
async def test_consent_requires_the_csrf_token(
    gw: Gateway, ada: User, zap: RegisteredClient, csrf: str | None
) -> None:
    page = await consent_page(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    form = {**hidden_fields(page), "action": "approve", "org_id": org_options(page)[0][0]}
    if csrf is None:
        del form["csrf_token"]
    else:
        form["csrf_token"] = csrf
    resp = await gw.client.post(gw.settings.oauth.paths.authorize, data=form, allow_redirects=False)
    await assert_page(resp, 400)
    assert code_count(gw) == 0


@pytest.mark.parametrize("csrf", [None, "forged-token"], ids=["missing", "wrong"])
async def test_logout_requires_the_csrf_token(
    gw: Gateway, ada: User, zap: RegisteredClient, csrf: str | None
) -> None:
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    page = await consent_page(gw, query)
    form = {} if csrf is None else {"csrf_token": csrf}
    logout = gw.settings.oauth.paths.logout
    resp = await gw.client.post(logout, data=form, allow_redirects=False)
    await assert_page(resp, 400)
    still = await get_authorize(gw, query)
    assert is_consent_page(await assert_page(still, 200))
    # With the page's token the logout works and the next request asks to sign in.
    token = hidden_fields(page)["csrf_token"]
    resp = await gw.client.post(logout, data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == gw.settings.oauth.paths.login
    after = await get_authorize(gw, query)
    assert is_login_page(await assert_page(after, 200))


@pytest.mark.parametrize(
    ("email", "password"),
    [("ada@example.com", "not the password"), ("nobody@example.com", PASSWORD)],
    ids=["wrong-password", "unknown-email"],
)
async def test_failed_login_is_401_with_one_generic_message(
    gw: Gateway, ada: User, zap: RegisteredClient, email: str, password: str
) -> None:
    login = await (await get_authorize(gw, good(zap.client.id))).text()
    resp = await post_login(gw, login, email, password)
    page = await assert_page(resp, 401)
    assert is_login_page(page)
    assert page_error(page) == "The email or password is not right."
    again = await get_authorize(gw, good(zap.client.id))
    assert is_login_page(await assert_page(again, 200))


@with_config(oauth={"login_throttle": {"per_account": "3/15 minutes"}})
async def test_login_is_throttled_per_account(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    await gw.user("bob@example.com")
    page = await (await get_authorize(gw, good(zap.client.id))).text()
    for _ in range(3):
        resp = await post_login(gw, page, "ada@example.com", "not the password")
        page = await assert_page(resp, 401)
    resp = await post_login(gw, page, "ada@example.com", PASSWORD)
    throttled = await assert_page(resp, 429)
    assert 0 < int(resp.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed attempts" in (page_error(throttled) or "")
    again = await get_authorize(gw, good(zap.client.id))
    assert is_login_page(await assert_page(again, 200))
    # Another account from the same address is not affected.
    resp = await post_login(gw, page, "bob@example.com", PASSWORD)
    assert resp.status == 303


OFF_SITE = [
    "https://evil.example/oauth/authorize?x=1",
    "//evil.example/oauth/authorize?x=1",
    "/\\evil.example",
    "http://127.0.0.1:18999/callback",
]


@pytest.mark.parametrize("next_url", OFF_SITE)
async def test_next_cannot_leave_the_site(
    gw: Gateway, ada: User, zap: RegisteredClient, next_url: str
) -> None:
    login_path = gw.settings.oauth.paths.login
    dashboard = gw.settings.dashboard.path  # where a sign-in with nothing to continue lands
    resp = await gw.client.get(login_path, params={"next": next_url}, allow_redirects=False)
    page = await assert_page(resp, 200)
    assert hidden_fields(page)["next"] == dashboard
    resp = await post_login(gw, page, "ada@example.com", next=next_url)
    assert resp.status == 303
    assert resp.headers["Location"] == dashboard


async def test_the_login_page_says_what_and_for_whom_and_keeps_the_email(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    resp = await get_authorize(gw, authorize_query(zap.client.id))
    page = await assert_page(resp, 200)
    assert (
        "Sign in to Gateway" in page and f"continue to <strong>{zap.client.name}</strong>" in page
    )
    resp = await post_login(gw, page, "ada@example.com", password="wrong")
    again = await resp.text()
    assert resp.status == 401
    assert 'value="ada@example.com"' in again  # the email stays; the password does not
    assert f"continue to <strong>{zap.client.name}</strong>" in again


async def test_opening_the_login_page_signed_in_goes_to_the_dashboard(
    gw: Gateway, ada: User
) -> None:
    login_path = gw.settings.oauth.paths.login
    page = await assert_page(await gw.client.get(login_path), 200)
    assert "continue to" not in page
    assert (await post_login(gw, page, "ada@example.com")).headers["Location"] == (
        gw.settings.dashboard.path)  # fmt: skip
    resp = await gw.client.get(login_path, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, gw.settings.dashboard.path)


# --- the user's decision ------------------------------------------------------


async def test_approve_redirects_with_code_state_and_iss(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    page = await consent_page(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    resp = await post_consent(gw, page)
    assert resp.status == 302
    assert resp.headers["Cache-Control"] == "no-store"
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = redirect_params(location)
    assert set(params) == {"code", "state", "iss"}
    assert params["code"].startswith("gwc_")
    assert params["state"] == STATE
    assert params["iss"] == issuer(gw)


async def test_redirect_keeps_the_registered_query(gw: Gateway, ada: User) -> None:
    uri = "http://127.0.0.1:18999/callback?tenant=7"
    app = await gw.oauth_client(redirect_uris=(uri,))
    query = authorize_query(app.client.id, pkce=pkce_pair(), redirect_uri=uri)
    params = redirect_params(await login_and_consent(gw, query))
    assert params["tenant"] == "7"
    assert params["code"].startswith("gwc_")


async def test_deny_redirects_access_denied_with_state(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    location = await login_and_consent(gw, query, action="deny")
    assert location.startswith(REDIRECT_URI + "?")
    params = redirect_params(location)
    assert params["error"] == "access_denied"
    assert params["state"] == STATE
    assert params["iss"] == issuer(gw)
    assert "code" not in params
    assert code_count(gw) == 0


async def test_an_org_the_user_is_not_in_is_refused(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    other = await gw.org("initech")
    page = await consent_page(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    resp = await post_consent(gw, page, org_id=other.id)
    page = await assert_page(resp, 400)
    assert page_error(page) == "Pick one of your organizations."
    assert code_count(gw) == 0


async def test_a_consent_form_answers_only_once(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    page = await consent_page(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    first = await post_consent(gw, page)
    assert first.status == 302
    again = await post_consent(gw, page)
    answer = await assert_page(again, 400)
    assert page_error(answer) == "This approval was already answered or expired."
    assert code_count(gw) == 1


async def test_the_org_picked_on_consent_is_the_tokens_org(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    globex = await gw.org("globex")
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    location = await login_and_consent(gw, query, org_id=globex.id)
    assert "code" in redirect_params(location)
    rows = gw.db_rows("SELECT org_id, user_id, client_id FROM oauth_codes")
    assert rows == [(globex.id, ada.id, zap.client.id)]


async def test_login_next_with_control_characters_falls_back(gw: Gateway) -> None:
    await gw.user()
    page = await gw.client.get("/oauth/login", params={"next": "/dashboard/x\r\nSet-Cookie: a=b"})
    text = await page.text()
    assert 'name="next" value="/dashboard"' in text  # the fallback, not the sent value


@with_config(oauth={"login_throttle": {"per_account": "5/15 minutes"}})
async def test_parallel_guesses_cannot_outrun_the_login_throttle(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    """Every attempt is counted before the slow password check: of 20 guesses sent at
    once, exactly 5 are checked and the other 15 refused."""
    page = await (await get_authorize(gw, good(zap.client.id))).text()
    guesses = [post_login(gw, page, "ada@example.com", f"guess {n}") for n in range(20)]
    statuses = sorted(resp.status for resp in await asyncio.gather(*guesses))
    assert statuses == [401] * 5 + [429] * 15


@with_config(oauth={"allow_admin_scope": True})
@pytest.mark.parametrize(("role", "granted"), [("member", False), ("admin", True), ("owner", True)])
async def test_only_an_owner_or_admin_can_grant_gateway_admin(
    gw: Gateway, role: str, granted: bool
) -> None:
    """A member who approves an app asking for gateway:admin gives it the other scopes
    only: the token carries no privilege its user does not hold in that organization."""
    await gw.user("mo@example.com", role=role)
    zap = await gw.oauth_client(scopes=("contacts:read", "gateway:admin"), allow_admin_scope=True)
    body = await issued_tokens(gw, zap, scope="contacts:read gateway:admin", email="mo@example.com")
    assert ("gateway:admin" in body["scope"].split()) is granted
    keys = await gw.client.get(
        gw.settings.management.prefix + "/keys",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert keys.status == (200 if granted else 403)


def kept_cookie(gw: Gateway) -> str:
    """The test client's current session cookie, as a copy an attacker could keep."""
    name = gw.settings.session.cookie_name
    return str(gw.client.session.cookie_jar.filter_cookies(URL(gw.base_url))[name].value)


async def test_a_cookie_copied_before_logout_is_worth_nothing_after_it(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    """Logout ends the session on the server: a copy of the cookie taken before it no
    longer opens the dashboard or the management API."""
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    page = await consent_page(gw, query)
    name, copied = gw.settings.session.cookie_name, kept_cookie(gw)
    keys = gw.settings.management.prefix + "/keys"
    with_copy = {"Cookie": f"{name}={copied}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other:
        before = await other.get(gw.base_url + keys, headers=with_copy)
        assert before.status == 200, await before.text()
        token = hidden_fields(page)["csrf_token"]
        logout = gw.settings.oauth.paths.logout
        assert (await gw.client.post(logout, data={"csrf_token": token})).status == 200
        after = await other.get(gw.base_url + keys, headers=with_copy)
        assert after.status == 401, await after.text()


async def test_a_replayed_cookie_cannot_answer_one_consent_request_twice(
    gw: Gateway, ada: User, zap: RegisteredClient
) -> None:
    """The pending request travels in the session cookie; a copy taken before the
    approval still lists it, but the server answers each request once."""
    query = authorize_query(zap.client.id, pkce=pkce_pair())
    page = await consent_page(gw, query)
    name, copied = gw.settings.session.cookie_name, kept_cookie(gw)
    assert (await post_consent(gw, page)).status == 302
    assert code_count(gw) == 1
    form = {**hidden_fields(page), "action": "approve", "org_id": org_options(page)[0][0]}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other:
        replay = await other.post(
            gw.base_url + gw.settings.oauth.paths.authorize,
            data=form,
            headers={"Cookie": f"{name}={copied}"},
            allow_redirects=False,
        )
        assert replay.status == 400, await replay.text()
    assert code_count(gw) == 1


@pytest.mark.parametrize("end", ["set_password", "disable_user"])
async def test_a_new_password_or_disabling_ends_every_session_of_the_user(
    gw: Gateway, ada: User, zap: RegisteredClient, end: str
) -> None:
    """What `gateway user set-password` and `gateway user disable` call: a cookie taken
    before is worth nothing after; a disabled user signs in no more."""
    from gateway.accounts import users

    await consent_page(gw, authorize_query(zap.client.id, pkce=pkce_pair()))
    name, copied = gw.settings.session.cookie_name, kept_cookie(gw)
    keys = gw.base_url + gw.settings.management.prefix + "/keys"
    with_copy = {"Cookie": f"{name}={copied}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other:
        assert (await other.get(keys, headers=with_copy)).status == 200
        if end == "set_password":
            await users.set_password(gw.store, "ada@example.com", "a brand new password")
        else:
            await users.disable_user(gw.store, "ada@example.com")
        assert (await other.get(keys, headers=with_copy)).status == 401
    password = "a brand new password" if end == "set_password" else PASSWORD
    login = await (await get_authorize(gw, good(zap.client.id))).text()
    resp = await post_login(gw, login, "ada@example.com", password)
    assert resp.status == (303 if end == "set_password" else 401)


async def test_a_disabled_user_s_tokens_stop_working(gw: Gateway, ada: User) -> None:
    from gateway.accounts import users

    zap = await gw.oauth_client()
    body = await issued_tokens(gw, zap)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await gw.client.get("/contacts", headers=bearer)).status == 200
    await users.disable_user(gw.store, "ada@example.com")
    deadline = time.monotonic() + 2.0  # other nodes: within cache.poll_interval
    while (await gw.client.get("/contacts", headers=bearer)).status == 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


# --- a standing approval ----------------------------------------------------------


async def test_an_approved_app_is_not_asked_again_unless_it_prompts(gw: Gateway) -> None:
    await gw.user()
    client = await gw.oauth_client()
    first = redirect_params(await login_and_consent(gw, authorize_query(client.client.id)))
    assert "code" in first
    # The same app, the same scopes, no prompt: straight back with a code.
    resp = await get_authorize(gw, authorize_query(client.client.id, prompt=None))
    assert resp.status == 302, await resp.text()
    again = redirect_params(resp.headers["Location"])
    assert again["state"] == STATE and again["code"] != first["code"]
    # A scope not approved yet, or prompt=consent: the page again.
    wider = authorize_query(client.client.id, prompt=None, scope="contacts:read contacts:write")
    assert (await get_authorize(gw, wider)).status == 200
    assert (await get_authorize(gw, authorize_query(client.client.id))).status == 200


async def test_a_revoked_approval_or_a_second_organization_asks_again(gw: Gateway) -> None:
    await gw.user(orgs=("acme", "globex"))
    client = await gw.oauth_client()
    globex = await gw.org("globex")
    await login_and_consent(gw, authorize_query(client.client.id), org_id=globex.id)
    (grant,) = await gw.store.list_grants_page(globex.id, None, None, 10)
    await gw.store.revoke_grant(grant.id, time.time())
    assert (await get_authorize(gw, authorize_query(client.client.id, prompt=None))).status == 200
    acme = await gw.org("acme")
    await login_and_consent(gw, authorize_query(client.client.id), org_id=acme.id)
    await login_and_consent(gw, authorize_query(client.client.id), org_id=globex.id)
    # Approved in two organizations: which one is the user's choice to make again.
    assert (await get_authorize(gw, authorize_query(client.client.id, prompt=None))).status == 200
