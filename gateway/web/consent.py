"""The authorization endpoint's pages: login when needed, then consent, where the
user picks an organization and approves scopes (``gateway.oauth.authorize``
decides; this module renders).

The pending request is kept in the user's session, not in the consent form, so
what the user approves is exactly what was shown.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict

from aiohttp import web
from aiohttp_session import Session

from gateway.accounts.users import ADMIN_ROLES
from gateway.config import ADMIN_SCOPE, Settings
from gateway.errors import OAuthError
from gateway.oauth.authorize import Authorization, NotRedirectable, Pending, origin_of
from gateway.oauth.params import query_params
from gateway.store.records import Membership, OAuthClient
from gateway.web.login import LoginForm, login_page
from gateway.web.pages import error_page, render
from gateway.web.session import CSRF_FIELD, Sessions, csrf_ok, csrf_token

MAX_PENDING = 5


def found_at(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def offered_scopes(
    scopes: tuple[str, ...], catalog: Mapping[str, str], memberships: list[Membership]
) -> list[dict[str, str]]:
    """The scopes the consent page lists: ``gateway:admin`` only to an owner or admin of
    some organization, and then granted only if the one picked is such an organization
    (``gateway.accounts.users.held_scopes``)."""
    admin_somewhere = any(m.role in ADMIN_ROLES for m in memberships)
    return [
        {
            "name": s,
            "description": catalog[s]
            + (" (only for an organization you own or administer)" if s == ADMIN_SCOPE else ""),
        }
        for s in scopes
        if s != ADMIN_SCOPE or admin_somewhere
    ]


class ConsentViews:
    def __init__(self, flow: Authorization, settings: Settings, sessions: Sessions) -> None:
        self.flow = flow
        self.settings = settings
        self.sessions = sessions

    # --- GET: show login or consent ---

    async def get(self, request: web.Request) -> web.Response:
        try:
            client, redirect_uri = await self.flow.client_and_redirect(request.query)
        except NotRedirectable as exc:
            return error_page(request, exc.status, exc.title, exc.detail)
        state = request.query.get("state")
        try:
            pending = self.flow.validate(client, redirect_uri, query_params(request.query))
        except OAuthError as exc:
            return found_at(self.flow.error_location(redirect_uri, state, exc))
        session = await self.sessions.load(request)
        if "user_id" not in session:
            form = LoginForm(self.settings.oauth.paths.login, str(request.rel_url),
                             self.settings.dashboard.product_name, client.name)  # fmt: skip
            response = login_page(request, form, csrf_token(session))
        else:
            prompts = request.query.get("prompt", "").split()
            location = None
            if "consent" not in prompts:  # OpenID Connect's prompt=consent asks again
                location = await self.flow.remembered(session["user_id"], pending)
            if location is not None:
                response = found_at(location)
            else:
                response = await self.consent_form(request, session, client, pending)
        await self.sessions.save(request, response, session)
        return response

    async def consent_form(
        self, request: web.Request, session: Session, client: OAuthClient, pending: Pending
    ) -> web.Response:
        memberships = await self.flow.store.memberships(session["user_id"])
        if not memberships:
            return error_page(
                request, 403, "No organization", "Your account belongs to no organization yet."
            )
        request_id = secrets.token_urlsafe(16)
        queue = dict(list(session.get("pending", {}).items())[-(MAX_PENDING - 1) :])
        queue[request_id] = asdict(pending)
        session["pending"] = queue
        return render(
            request,
            "consent.html",
            {
                "action": self.settings.oauth.paths.authorize,
                "client_name": client.name,
                "email": session.get("email"),
                "orgs": [{"id": m.org.id, "name": m.org.name, "role": m.role} for m in memberships],
                "scopes": offered_scopes(pending.scopes, self.settings.scopes, memberships),
                "request_id": request_id,
                "csrf_token": csrf_token(session),
                "csrf_field": CSRF_FIELD,
                "logout": self.settings.oauth.paths.logout,
            },
            form_targets=(origin_of(pending.redirect_uri),),
        )

    # --- POST: the user's decision ---

    async def post(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = await self.sessions.load(request)
        sent_csrf = form.get(CSRF_FIELD)
        if "user_id" not in session or not csrf_ok(
            session, sent_csrf if isinstance(sent_csrf, str) else None
        ):
            return error_page(request, 400, "Session expired", "Start again from the application.")
        request_id = form.get("request_id")
        queue = dict(session.get("pending", {}))
        data = queue.pop(request_id, None) if isinstance(request_id, str) else None
        session["pending"] = queue
        # Once only, whatever copy of the cookie (which still lists it) comes back.
        if data is not None and not await self.sessions.answered(str(request_id)):
            data = None
        if data is None:
            response = error_page(
                request, 400, "Request expired", "This approval was already answered or expired."
            )
            await self.sessions.save(request, response, session)
            return response
        pending = Pending.from_session(data)
        try:
            response = found_at(
                await self.flow.decide(
                    session["user_id"], pending, form.get("action"), form.get("org_id")
                )
            )
        except NotRedirectable as exc:
            response = error_page(request, exc.status, exc.title, exc.detail)
        await self.sessions.save(request, response, session)
        return response
