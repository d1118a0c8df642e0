"""Token introspection, RFC 7662.

Only confidential clients may ask (§2.1 requires authorization), and a client
learns about its own tokens only: anything else, like an unknown, expired or
revoked token, is ``{"active": false}`` and nothing more (§2.2).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.oauth.client_auth import authenticate_client
from gateway.oauth.params import body_params, require
from gateway.oauth.token_endpoint import NO_STORE
from gateway.oauth.token_service import TokenService
from gateway.store import Store


class IntrospectionEndpoint:
    def __init__(self, store: Store, tokens: TokenService, issuer: str) -> None:
        self.store = store
        self.tokens = tokens
        self.issuer = issuer

    async def handle(self, request: web.Request) -> web.Response:
        params = await body_params(request)
        client = await authenticate_client(request, params, self.store, allow_public=False)
        token = await self.tokens.find(require(params, "token"))
        now = time.time()
        body: dict[str, Any] = {"active": False}
        if token is not None and token.client_id == client.id and token.active_at(now):
            if token.kind == "refresh" and token.used_at is not None:
                return web.json_response(body, headers=NO_STORE)
            body = {
                "active": True,
                "scope": " ".join(token.scopes),
                "client_id": token.client_id,
                "token_type": "Bearer" if token.kind == "access" else "refresh_token",
                "exp": int(token.expires_at),
                "iat": int(token.created_at),
                "iss": self.issuer,
                "org_id": token.org_id,
            }
            if token.user_id:
                body["sub"] = token.user_id
        return web.json_response(body, headers=NO_STORE)
