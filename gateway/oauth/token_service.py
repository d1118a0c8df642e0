"""Access and refresh tokens: opaque, prefixed, stored only as SHA-256 digests.

A token family is every token descended from one authorization code or one
client-credentials issuance; replaying a code or a spent refresh token revokes
the whole family (RFC 9700 §2.2.2, §4.14).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from gateway import crypto
from gateway.accounts.users import held_scopes
from gateway.config import OAuth
from gateway.errors import InvalidScope, Unauthorized
from gateway.oauth.jwt_tokens import JWT_PREFIX, JwtCodec
from gateway.pipeline.authn import Principal
from gateway.store import Store
from gateway.store.records import OAuthToken


@dataclass(frozen=True, slots=True)
class Issuance:
    """Who a new token pair is for."""

    client_id: str
    org_id: str
    scopes: tuple[str, ...]
    family_id: str
    user_id: str | None = None
    grant_id: str | None = None
    with_refresh: bool = True
    refresh_scopes: tuple[str, ...] | None = None  # default: the access token's scopes
    environment: str = "live"  # the client's


class TokenService:
    def __init__(self, store: Store, settings: OAuth, jwt: JwtCodec | None = None) -> None:
        self.store = store
        self.settings = settings
        self.jwt = jwt

    async def issue(self, issuance: Issuance) -> dict[str, Any]:
        """Mint and store the tokens; return the RFC 6749 §5.1 response body. A token
        acting for a user carries no privilege that user does not hold now."""
        if issuance.user_id is not None:
            scopes = await held_scopes(
                self.store, issuance.user_id, issuance.org_id, issuance.scopes
            )
            if not scopes:
                raise InvalidScope("None of the granted scopes can be issued to this user.")
            issuance = replace(issuance, scopes=scopes)
        now = time.time()
        record = self._record("access", issuance, now, self.settings.access_token_ttl)
        access = self._access_token(record)
        rows = [(record, access)]
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_ttl,
            "scope": " ".join(issuance.scopes),
        }
        if issuance.with_refresh:
            refresh = crypto.new_secret(crypto.REFRESH_TOKEN_PREFIX)
            record = self._record("refresh", issuance, now, self.settings.refresh_token_ttl)
            if issuance.refresh_scopes is not None:
                record = replace(record, scopes=issuance.refresh_scopes)
            rows.append((record, refresh))
            body["refresh_token"] = refresh
        await self.store.insert_tokens([(record, crypto.digest(raw)) for record, raw in rows])
        return body

    def _access_token(self, record: OAuthToken) -> str:
        if self.jwt is None:
            return crypto.new_secret(crypto.ACCESS_TOKEN_PREFIX)
        # RFC 9068 §2.2: the claims an upstream needs, plus the organization.
        return self.jwt.encode(
            {
                "sub": record.user_id or record.client_id,
                "exp": int(record.expires_at),
                "iat": int(record.created_at),
                "jti": record.id,
                "client_id": record.client_id,
                "scope": " ".join(record.scopes),
                "org_id": record.org_id,
            }
        )

    @staticmethod
    def _record(kind: str, issuance: Issuance, now: float, ttl: int) -> OAuthToken:
        return OAuthToken(
            id=crypto.new_id("tok"),
            kind=kind,
            family_id=issuance.family_id,
            client_id=issuance.client_id,
            org_id=issuance.org_id,
            scopes=issuance.scopes,
            created_at=now,
            expires_at=now + ttl,
            user_id=issuance.user_id,
            grant_id=issuance.grant_id,
            environment=issuance.environment,
        )

    async def find(self, secret: str) -> OAuthToken | None:
        """A token by its raw value, whatever its state (for revocation and introspection)."""
        for prefix in (crypto.ACCESS_TOKEN_PREFIX, crypto.REFRESH_TOKEN_PREFIX):
            if crypto.well_formed(secret, prefix):
                return await self.store.find_token(crypto.digest(secret))
        if self.jwt is not None and secret.startswith(JWT_PREFIX) and len(secret) < 8192:
            return await self.store.find_token(crypto.digest(secret))
        return None

    async def principal(self, digest: str) -> Principal | None:
        """The Authenticator's lookup for ``gwa_`` Bearer tokens."""
        token = await self.store.find_token(digest)
        if token is None or token.kind != "access":
            return None
        if token.revoked_at is not None:
            raise Unauthorized("revoked")
        return Principal(
            credential_id=token.id,
            org_id=token.org_id,
            scopes=frozenset(token.scopes),
            scope_header=" ".join(token.scopes),
            method="oauth",
            expires_at=token.expires_at,
            client_id=token.client_id,
            user_id=token.user_id,
            environment=token.environment,
        )
