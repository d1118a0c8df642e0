"""Login and logout pages.

A failed login shows the same message whatever was wrong, costs the same
Argon2 verification whether or not the account exists, and counts against
both the account and the client address (``oauth.login_throttle``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from gateway.accounts.sign_in import SignIn
from gateway.config import Settings
from gateway.errors import SignInThrottled, SignInUnavailable
from gateway.pipeline.headers import ForwardedFor
from gateway.store import Store
from gateway.web.middleware import client_address
from gateway.web.pages import error_page, render
from gateway.web.session import CSRF_FIELD, Sessions, csrf_ok, csrf_token

BAD_LOGIN = "The email or password is not right."
# A path and query made of URL characters only: no CR/LF or spaces in a Location header.
SAFE_NEXT = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$")


@dataclass(frozen=True, slots=True)
class LoginForm:
    """What the login page says: where it posts, where it goes on to, and for whom."""

    action: str
    next_url: str
    product: str  # what the user signs in to
    app: str | None = None  # the application asking, during an authorization
    email: str = ""  # kept after a failed attempt
    error: str | None = None


def login_page(request: web.Request, form: LoginForm, csrf: str, status: int = 200) -> web.Response:
    """The login form, posting to ``form.action`` and going on to ``form.next_url``."""
    context = {
        "action": form.action,
        "next": form.next_url,
        "product": form.product,
        "app": form.app,
        "email": form.email,
        "csrf_token": csrf,
        "csrf_field": CSRF_FIELD,
        "error": form.error,
    }
    return render(request, "login.html", context, status=status)


class LoginViews:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        sessions: Sessions,
        sign_in: SignIn,
        forwarded_for: ForwardedFor,
    ) -> None:
        self.store = store
        self.paths = settings.oauth.paths
        self.dashboard = settings.dashboard.path
        self.product = settings.dashboard.product_name
        self.sessions = sessions
        self.sign_in = sign_in
        self.forwarded_for = forwarded_for

    def safe_next(self, value: object) -> str:
        """Only back to our authorization endpoint or the dashboard (no open redirect)."""
        if (
            isinstance(value, str)
            and SAFE_NEXT.match(value)
            and (
                value.startswith(self.paths.authorize + "?")
                or value == self.dashboard
                or value.startswith(self.dashboard + "/")
            )
        ):
            return value
        return self.dashboard  # nothing else to continue: the user's dashboard

    async def app_asking(self, next_url: str) -> str | None:
        """The application an authorization request in ``next_url`` is for."""
        if not next_url.startswith(self.paths.authorize + "?"):
            return None
        client_id = URL(next_url).query.get("client_id")
        found = await self.store.get_client(client_id) if client_id else None
        return found.client.name if found is not None else None

    async def form(
        self,
        request: web.Request,
        csrf: str,
        next_url: str,
        error: str | None = None,
        status: int = 200,
        email: str = "",
    ) -> web.Response:
        app = await self.app_asking(next_url)
        shown = LoginForm(self.paths.login, next_url, self.product, app, email, error)
        return login_page(request, shown, csrf, status)

    async def get(self, request: web.Request) -> web.Response:
        session = await self.sessions.load(request)
        next_url = self.safe_next(request.query.get("next"))
        if "user_id" in session:  # signed in already: on to where they were going
            response = web.Response(status=303, headers={"Location": next_url})
        else:
            response = await self.form(request, csrf_token(session), next_url)
        await self.sessions.save(request, response, session)
        return response

    async def post(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = await self.sessions.load(request)
        next_url = self.safe_next(form.get("next"))
        sent = form.get(CSRF_FIELD)
        if not csrf_ok(session, sent if isinstance(sent, str) else None):
            response = await self.form(
                request, csrf_token(session), next_url, "Your session expired; try again.", 400
            )
            await self.sessions.save(request, response, session)
            return response
        email = str(form.get("email", "")).strip().lower()[:320]
        password = str(form.get("password", ""))
        ip = client_address(self.forwarded_for, request) or "-"
        try:
            user = await self.sign_in.check(email, password, ip)
        except SignInUnavailable:
            return error_page(request, 503, "Try again shortly", "Sign-in is unavailable.")
        except SignInThrottled as exc:
            response = await self.form(
                request, csrf_token(session), next_url, exc.message, 429, email
            )
            response.headers.update(exc.headers())
            return response
        if user is None:
            return await self.form(request, csrf_token(session), next_url, BAD_LOGIN, 401, email)
        fresh = await self.sessions.signed_in(user.id, user.email)
        response = web.Response(status=303, headers={"Location": next_url})
        await self.sessions.save(request, response, fresh)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = await self.sessions.load(request)
        sent = form.get(CSRF_FIELD)
        if not csrf_ok(session, sent if isinstance(sent, str) else None):
            return error_page(request, 400, "Session expired", "Reload the page and try again.")
        await self.sessions.end(session)
        response = web.Response(status=303, headers={"Location": self.paths.login})
        await self.sessions.save(request, response, session)
        return response
