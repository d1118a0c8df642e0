"""Token revocation, RFC 7009.

The client authenticates as at the token endpoint. Whatever the token, the
answer is 200 with an empty body (§2.2): an unknown, expired or foreign token
is not an error, so the endpoint reveals nothing. Revoking a refresh token
revokes its whole family, the access tokens issued from it included (§2.1).
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.oauth.client_auth import authenticate_client
from gateway.oauth.params import body_params, require
from gateway.oauth.token_endpoint import NO_STORE
from gateway.oauth.token_service import TokenService
from gateway.store import Store


class RevocationEndpoint:
    def __init__(self, store: Store, tokens: TokenService) -> None:
        self.store = store
        self.tokens = tokens

    async def handle(self, request: web.Request) -> web.Response:
        params = await body_params(request)
        client = await authenticate_client(request, params, self.store)
        token = await self.tokens.find(require(params, "token"))
        if token is not None and token.client_id == client.id:
            if token.kind == "refresh":
                await self.store.revoke_family(token.family_id, time.time())
            else:
                await self.store.revoke_token(token.id, time.time())
        return web.Response(status=200, headers=NO_STORE)
