"""The token endpoint, RFC 6749 §3.2, one class per grant with validate and issue split.

Success is §5.1 (``Cache-Control: no-store``); errors are §5.2, rendered by the
error middleware from the OAuthError tree.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

from aiohttp import web

from gateway import crypto
from gateway.accounts.sign_in import SignIn
from gateway.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from gateway.events import client_event
from gateway.oauth import pkce
from gateway.oauth.client_auth import authenticate_client
from gateway.oauth.params import body_params, require, scope_list
from gateway.oauth.token_service import Issuance, TokenService
from gateway.pipeline.headers import ForwardedFor
from gateway.store import Store
from gateway.store.records import OAuthClient

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def narrowed(requested: tuple[str, ...] | None, ceiling: tuple[str, ...]) -> tuple[str, ...]:
    """§3.3/§6: a request may ask for the same scopes or fewer, never more."""
    if requested is None:
        return ceiling
    if not requested:
        raise InvalidScope("The scope parameter is empty.")
    extra = [s for s in requested if s not in ceiling]
    if extra:
        raise InvalidScope(f"Scope '{extra[0]}' exceeds what this grant allows.")
    return requested


async def still_granted(store: Store, grant_id: str) -> None:
    """The user may have revoked the app since the code or refresh token was issued."""
    grant = await store.get_grant(grant_id)
    if grant is None or grant.revoked_at is not None:
        raise InvalidGrant("The user revoked this application's access.")


def within_client(scopes: tuple[str, ...], client: OAuthClient) -> tuple[str, ...]:
    """A client whose allowed scopes were narrowed gets no more than it is allowed now."""
    kept = tuple(s for s in scopes if s in client.allowed_scopes)
    if not kept:
        raise InvalidScope("None of the granted scopes is still allowed for this client.")
    return kept


class GrantType(Protocol):
    grant_type: ClassVar[str]

    async def validate(self, client: OAuthClient, params: dict[str, str], ip: str) -> Issuance:
        """``ip``: the caller's address, for the sign-in throttle."""
        ...


@dataclass
class AuthorizationCodeGrant:
    """§4.1.3, with PKCE (RFC 7636 §4.6). A replayed code revokes what it yielded."""

    store: Store
    grant_type: ClassVar[str] = "authorization_code"

    async def validate(self, client: OAuthClient, params: dict[str, str], ip: str) -> Issuance:
        code = require(params, "code")
        if not crypto.well_formed(code, crypto.CODE_PREFIX):
            raise InvalidGrant("The authorization code is invalid.")
        # The client is authenticated already, and the code is looked up as its own: a
        # code presented by any other client stays usable by the one it was issued to.
        consumed = await self.store.consume_code(crypto.digest(code), time.time(), client.id)
        if consumed is None or consumed.code.client_id != client.id:
            raise InvalidGrant("The authorization code is invalid.")
        found = consumed.code
        if not consumed.fresh:
            await self.store.revoke_family(found.id, time.time())
            raise InvalidGrant("The authorization code was already used.")
        if time.time() >= found.expires_at:
            raise InvalidGrant("The authorization code has expired.")
        if params.get("redirect_uri") != found.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the authorization request.")
        pkce.verify(found.code_challenge, params.get("code_verifier"))
        await still_granted(self.store, found.grant_id)
        return Issuance(
            client_id=client.id,
            org_id=found.org_id,
            scopes=within_client(found.scopes, client),
            family_id=found.id,
            user_id=found.user_id,
            grant_id=found.grant_id,
            with_refresh="refresh_token" in client.grant_types,
        )


@dataclass
class RefreshTokenGrant:
    """§6 with rotation: each use returns a new refresh token; reuse of a spent one
    revokes the whole family (RFC 9700 §4.14.2)."""

    store: Store
    grant_type: ClassVar[str] = "refresh_token"

    async def validate(self, client: OAuthClient, params: dict[str, str], ip: str) -> Issuance:
        raw = require(params, "refresh_token")
        if not crypto.well_formed(raw, crypto.REFRESH_TOKEN_PREFIX):
            raise InvalidGrant("The refresh token is invalid.")
        now = time.time()
        digest = crypto.digest(raw)
        # Check everything that can be checked before spending the token, so that a
        # request refused for its scope leaves the refresh token usable.
        token = await self.store.find_token(digest)
        if token is None or token.kind != "refresh" or token.client_id != client.id:
            raise InvalidGrant("The refresh token is invalid.")
        scopes = narrowed(scope_list(params.get("scope")), token.scopes)
        if token.used_at is None and not token.active_at(now):
            raise InvalidGrant("The refresh token has expired or was revoked.")
        if token.grant_id is not None:
            await still_granted(self.store, token.grant_id)
        scopes = within_client(scopes, client)
        consumed = await self.store.consume_refresh_token(digest, now)
        if consumed is None or not consumed.fresh:
            async with self.store.transaction():
                await self.store.revoke_family(token.family_id, now)
                await self.store.add_event(client_event(
                    client, token.org_id, "refresh_token.reuse_detected",
                    family_id=token.family_id, user_id=token.user_id,
                ))  # fmt: skip
            raise InvalidGrant("The refresh token was already used; its grant is revoked.")
        return Issuance(
            client_id=client.id,
            org_id=token.org_id,
            scopes=scopes,
            family_id=token.family_id,
            user_id=token.user_id,
            grant_id=token.grant_id,
            # §6: the new refresh token keeps the scope of the one presented.
            refresh_scopes=token.scopes,
        )


@dataclass
class ClientCredentialsGrant:
    """§4.4: a token for the client's own organization; never a refresh token.

    Legacy mode (per client, off by default): ``auth_string`` = base64 of
    ``email:password`` obtains a token acting for that user, who must belong to
    the client's organization.
    """

    store: Store
    sign_in: SignIn
    grant_type: ClassVar[str] = "client_credentials"

    async def validate(self, client: OAuthClient, params: dict[str, str], ip: str) -> Issuance:
        if client.public or client.org_id is None:
            raise InvalidRequest("client_credentials needs a confidential client bound to an org.")
        user_id = await self._legacy_user(client, params.get("auth_string"), ip)
        return Issuance(
            client_id=client.id,
            org_id=client.org_id,
            scopes=narrowed(scope_list(params.get("scope")), client.allowed_scopes),
            family_id=crypto.new_id("fam"),
            user_id=user_id,
            with_refresh=False,
        )

    async def _legacy_user(
        self, client: OAuthClient, auth_string: str | None, ip: str
    ) -> str | None:
        if auth_string is None:
            return None
        if not client.allow_user_auth:
            raise InvalidRequest("auth_string is not enabled for this client.")
        try:
            email, sep, password = (
                base64.b64decode(auth_string, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidGrant("auth_string cannot be decoded.") from None
        # The same throttle as the login page: per account and per address (429, 503).
        user = await self.sign_in.check(email, password, ip) if sep else None
        if user is None:
            raise InvalidGrant("The user credentials in auth_string are invalid.")
        if client.org_id not in {m.org.id for m in await self.store.memberships(user.id)}:
            raise InvalidGrant("The user does not belong to this client's organization.")
        return user.id


class TokenEndpoint:
    def __init__(
        self, store: Store, tokens: TokenService, sign_in: SignIn, forwarded_for: ForwardedFor
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.forwarded_for = forwarded_for
        grants: list[GrantType] = [
            AuthorizationCodeGrant(store),
            RefreshTokenGrant(store),
            ClientCredentialsGrant(store, sign_in),
        ]
        self.grants = {g.grant_type: g for g in grants}

    async def handle(self, request: web.Request) -> web.Response:
        params = await body_params(request)
        client = await authenticate_client(request, params, self.store)
        grant_type = require(params, "grant_type")
        grant = self.grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType()
        if grant_type not in client.grant_types:
            raise UnauthorizedClient()
        ip, _ = self.forwarded_for.resolve(request.remote or "", request.scheme, request.headers)
        issuance = replace(await grant.validate(client, params, ip), environment=client.environment)
        body: dict[str, Any] = await self.tokens.issue(issuance)
        return web.json_response(body, headers=NO_STORE)
