"""The authorization endpoint's protocol, RFC 6749 §4.1.1-§4.1.2, with consent.

Errors about the client or its redirect_uri are ``NotRedirectable``: shown on
the gateway's own page and never redirected (§4.1.2.1, RFC 9700 §4.1), so an
attacker cannot bounce a user to an address of their choosing. Every other
error redirects to the validated redirect_uri with ``error``, ``state`` and
``iss`` (RFC 9207). What this module returns (a pending request, a location to
redirect to) is rendered by ``gateway.web.consent``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from multidict import MultiMapping
from yarl import URL

from gateway import crypto
from gateway.accounts.users import held_scopes
from gateway.config import Settings
from gateway.errors import (
    AccessDenied,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from gateway.events import grant_event
from gateway.oauth import pkce
from gateway.oauth.metadata import issuer
from gateway.oauth.params import scope_list
from gateway.store import Store
from gateway.store.records import AuthCode, OAuthClient

UNKNOWN = "Unknown application"


class NotRedirectable(Exception):
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


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


class Authorization:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.issuer = issuer(settings)

    # --- validation ---

    async def client_and_redirect(self, query: MultiMapping[str]) -> tuple[OAuthClient, str]:
        ids, uris = query.getall("client_id", []), query.getall("redirect_uri", [])
        if len(ids) != 1 or not ids[0]:
            raise NotRedirectable(
                400, "Unknown application", "The request names no single client_id."
            )
        found = await self.store.get_client(ids[0])
        if found is None or found.client.disabled_at is not None:
            raise NotRedirectable(
                400, "Unknown application", "This application is unknown or disabled."
            )
        if len(uris) != 1 or uris[0] not in found.client.redirect_uris:
            # Exact string match (RFC 9700 §4.1.3): no prefix, case or normalization tricks.
            raise NotRedirectable(
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

    def error_location(self, redirect_uri: str, state: str | None, error: OAuthError) -> str:
        return redirect_target(
            redirect_uri, state, error=error.code, error_description=error.message, iss=self.issuer
        )

    async def remembered(self, user_id: str, pending: Pending) -> str | None:
        """Where to send a user who approved this app before: the code for the one
        organization whose standing approval covers every scope asked (and which the
        user still holds); None to ask again (no approval, or several organizations to
        choose from). As Google and GitHub do; ``prompt=consent`` always asks."""
        covering = []
        for membership in await self.store.memberships(user_id):
            org_id = membership.org.id
            for grant in await self.store.list_grants_page(org_id, user_id, None, 500):
                if grant.client_id == pending.client_id and set(pending.scopes) <= set(
                    grant.scopes
                ):
                    covering.append(org_id)
        if len(covering) != 1:
            return None
        org_id = covering[0]
        if await held_scopes(self.store, user_id, org_id, pending.scopes) != pending.scopes:
            return None  # the user's role changed since: they decide again
        code = await self.issue_code(pending, user_id, org_id)
        return redirect_target(pending.redirect_uri, pending.state, code=code, iss=self.issuer)

    async def decide(self, user_id: str, pending: Pending, action: object, org_id: object) -> str:
        """The user's answer to a pending request: where to send them (§4.1.2)."""
        found = await self.store.get_client(pending.client_id)
        if found is None or found.client.disabled_at is not None:
            raise NotRedirectable(400, UNKNOWN, "This application is disabled.")
        if action == "deny":
            return self.error_location(pending.redirect_uri, pending.state, AccessDenied())
        if action != "approve":
            raise NotRedirectable(400, "Bad request", "Choose approve or deny.")
        orgs = {m.org.id for m in await self.store.memberships(user_id)}
        if not isinstance(org_id, str) or org_id not in orgs:
            raise NotRedirectable(400, "Bad request", "Pick one of your organizations.")
        scopes = await held_scopes(self.store, user_id, org_id, pending.scopes)
        if not scopes:
            return self.error_location(pending.redirect_uri, pending.state, AccessDenied())
        code = await self.issue_code(replace(pending, scopes=scopes), user_id, org_id)
        return redirect_target(pending.redirect_uri, pending.state, code=code, iss=self.issuer)

    async def issue_code(self, pending: Pending, user_id: str, org_id: str) -> str:
        now = time.time()
        new_id = crypto.new_id("grant")
        async with self.store.transaction():
            grant_id = await self.store.upsert_grant(
                new_id, user_id, org_id, pending.client_id, pending.scopes, now
            )
            grant, found = (
                await self.store.get_grant(grant_id),
                await self.store.get_client(pending.client_id),
            )
            if grant_id == new_id and grant is not None and found is not None:
                await self.store.add_event(grant_event(found.client, grant, "grant.created"))
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
