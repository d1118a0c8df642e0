"""The authorization endpoint, RFC 6749 §4.1.1-§4.1.2, with consent.

Errors about the client or its redirect_uri are shown on an error page and
never redirected (§4.1.2.1, RFC 9700 §4.1): an attacker must not be able to
bounce a user to an address of their choosing. Every other error redirects to
the validated redirect_uri with ``error``, ``state`` and ``iss`` (RFC 9207).

The pending request is kept in the user's session, not in the consent form, so
what the user approves is exactly what was shown.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_session import Session
from multidict import MultiMapping
from yarl import URL

from gateway import crypto
from gateway.config import Settings
from gateway.errors import (
    AccessDenied,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from gateway.oauth import pkce
from gateway.oauth.metadata import issuer
from gateway.oauth.params import query_params, scope_list
from gateway.store import Store
from gateway.store.records import AuthCode, OAuthClient
from gateway.web.pages import error_page, render
from gateway.web.session import CSRF_FIELD, Sessions, csrf_ok, csrf_token

MAX_PENDING = 5


class PageError(Exception):
    """An error shown on our own page (never a redirect)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@dataclass(frozen=True, slots=True)
class Pending:
    """A validated authorization request waiting for the user's decision."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str | None

    @classmethod
    def from_session(cls, data: dict[str, Any]) -> Pending:
        return cls(
            client_id=data["client_id"],
            redirect_uri=data["redirect_uri"],
            scopes=tuple(data["scopes"]),
            state=data["state"],
            code_challenge=data["code_challenge"],
        )


def redirect_target(redirect_uri: str, state: str | None, **params: str) -> str:
    """§4.1.2: add parameters to the redirect URI, keeping its own query."""
    extra = {**params, **({"state": state} if state is not None else {})}
    return str(URL(redirect_uri).extend_query(extra))


def found_at(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


class AuthorizeEndpoint:
    def __init__(self, store: Store, settings: Settings, sessions: Sessions) -> None:
        self.store = store
        self.settings = settings
        self.sessions = sessions
        self.issuer = issuer(settings)

    # --- validation ---

    async def client_and_redirect(self, query: MultiMapping[str]) -> tuple[OAuthClient, str]:
        ids, uris = query.getall("client_id", []), query.getall("redirect_uri", [])
        if len(ids) != 1 or not ids[0]:
            raise PageError(400, "Unknown application", "The request names no single client_id.")
        found = await self.store.get_client(ids[0])
        if found is None or found.client.disabled_at is not None:
            raise PageError(400, "Unknown application", "This application is unknown or disabled.")
        if len(uris) != 1 or uris[0] not in found.client.redirect_uris:
            # Exact string match (RFC 9700 §4.1.3): no prefix, case or normalization tricks.
            raise PageError(
                400,
                "Invalid redirect address",
                "The redirect_uri is missing or is not registered for this application.",
            )
        return found.client, uris[0]

    def validate(self, client: OAuthClient, redirect_uri: str, params: dict[str, str]) -> Pending:
        if params.get("response_type") != "code":
            raise UnsupportedResponseType()
        if "authorization_code" not in client.grant_types:
            raise UnauthorizedClient()
        scopes = scope_list(params.get("scope")) or self.settings.oauth.default_scopes
        if not scopes:
            raise InvalidScope("No scope was requested and there is no default.")
        for scope in scopes:
            if scope not in client.allowed_scopes or scope not in self.settings.scopes:
                raise InvalidScope(f"Scope '{scope}' is not available to this application.")
        required = client.public or self.settings.oauth.require_pkce == "all"
        challenge = pkce.check_challenge(
            params.get("code_challenge"), params.get("code_challenge_method"), required
        )
        return Pending(client.id, redirect_uri, scopes, params.get("state"), challenge)

    def error_redirect(
        self, redirect_uri: str, state: str | None, error: OAuthError
    ) -> web.Response:
        return found_at(
            redirect_target(
                redirect_uri,
                state,
                error=error.code,
                error_description=error.message,
                iss=self.issuer,
            )
        )

    # --- GET: show login or consent ---

    async def get(self, request: web.Request) -> web.Response:
        try:
            client, redirect_uri = await self.client_and_redirect(request.query)
        except PageError as exc:
            return error_page(request, exc.status, exc.title, exc.detail)
        state = request.query.get("state")
        try:
            pending = self.validate(client, redirect_uri, query_params(request.query))
        except OAuthError as exc:
            return self.error_redirect(redirect_uri, state, exc)
        session = await self.sessions.load(request)
        if "user_id" not in session:
            response = self.login_form(request, session, next_url=str(request.rel_url))
        else:
            response = await self.consent_form(request, session, client, pending)
        await self.sessions.save(request, response, session)
        return response

    def login_form(
        self,
        request: web.Request,
        session: Session,
        *,
        next_url: str,
        error: str | None = None,
        status: int = 200,
    ) -> web.Response:
        return render(
            request,
            "login.html",
            {
                "action": self.settings.oauth.paths.login,
                "next": next_url,
                "csrf_token": csrf_token(session),
                "csrf_field": CSRF_FIELD,
                "error": error,
            },
            status=status,
        )

    async def consent_form(
        self, request: web.Request, session: Session, client: OAuthClient, pending: Pending
    ) -> web.Response:
        memberships = await self.store.memberships(session["user_id"])
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
                "scopes": [
                    {"name": s, "description": self.settings.scopes[s]} for s in pending.scopes
                ],
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
        if data is None:
            response = error_page(
                request, 400, "Request expired", "This approval was already answered or expired."
            )
            await self.sessions.save(request, response, session)
            return response
        pending = Pending.from_session(data)
        try:
            response = await self.decide(session, pending, form.get("action"), form.get("org_id"))
        except PageError as exc:
            response = error_page(request, exc.status, exc.title, exc.detail)
        await self.sessions.save(request, response, session)
        return response

    async def decide(
        self, session: Session, pending: Pending, action: object, org_id: object
    ) -> web.Response:
        found = await self.store.get_client(pending.client_id)
        if found is None or found.client.disabled_at is not None:
            raise PageError(400, "Unknown application", "This application is disabled.")
        if action == "deny":
            return self.error_redirect(pending.redirect_uri, pending.state, AccessDenied())
        if action != "approve":
            raise PageError(400, "Bad request", "Choose approve or deny.")
        user_id = session["user_id"]
        orgs = {m.org.id for m in await self.store.memberships(user_id)}
        if not isinstance(org_id, str) or org_id not in orgs:
            raise PageError(400, "Bad request", "Pick one of your organizations.")
        code = await self.issue_code(pending, user_id, org_id)
        return found_at(
            redirect_target(pending.redirect_uri, pending.state, code=code, iss=self.issuer)
        )

    async def issue_code(self, pending: Pending, user_id: str, org_id: str) -> str:
        now = time.time()
        grant_id = await self.store.upsert_grant(
            crypto.new_id("grant"), user_id, org_id, pending.client_id, pending.scopes, now
        )
        raw = crypto.new_secret(crypto.CODE_PREFIX)
        code = AuthCode(
            id=crypto.new_id("code"),
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            user_id=user_id,
            org_id=org_id,
            grant_id=grant_id,
            scopes=pending.scopes,
            code_challenge=pending.code_challenge,
            created_at=now,
            expires_at=now + self.settings.oauth.code_ttl,
        )
        await self.store.insert_code(code, crypto.digest(raw))
        return raw
