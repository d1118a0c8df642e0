"""CORS for the token and revocation endpoints, so that a single-page app (a public
client) can finish the authorization code flow with PKCE from the browser.

- A preflight is allowed when its origin belongs to some client: a public
  client's redirect URIs' origins, or a client's ``allowed_origins``.
- An actual response names the origin in ``Access-Control-Allow-Origin`` only
  when it belongs to the client named in the request (``client_id``, or the
  Basic credentials), errors included, so that the app can read them.

Credentials in the CORS sense (cookies) are never allowed: these endpoints take
none from a browser. The management API and the pages never answer CORS.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import GatewayError
from gateway.oauth.client_auth import basic_credentials
from gateway.oauth.clients import origins
from gateway.oauth.params import body_params
from gateway.store import Store
from gateway.web.endpoints import View
from gateway.web.middleware import EXCHANGE, render

VARY = ("Vary", "Origin")
MAX_AGE = "600"


class TokenCors:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "").lower()
        requested = request.headers.get("Access-Control-Request-Method")
        response = web.Response(status=204, headers=[VARY])
        if origin and requested == "POST" and await self._known(origin):
            response.headers.update({
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": MAX_AGE,
            })  # fmt: skip
        return response

    async def _known(self, origin: str) -> bool:
        clients = await self.store.list_clients()
        return any(origin in origins(c) for c in clients if c.disabled_at is None)

    def around(self, view: View) -> View:
        """``view`` with CORS on its answers, errors included."""

        async def answered(request: web.Request) -> web.StreamResponse:
            try:
                response = await view(request)
            except GatewayError as exc:
                response = render(exc, request[EXCHANGE].request_id)
            origin = request.headers.get("Origin", "").lower()
            if origin:
                response.headers.add(*VARY)
                if await self._of_named_client(request, origin):
                    response.headers["Access-Control-Allow-Origin"] = origin
            return response

        return answered

    async def _of_named_client(self, request: web.Request, origin: str) -> bool:
        """Whether ``origin`` is the client's named in the request, read as client
        authentication reads it (``client_auth``)."""
        try:
            basic = basic_credentials(request)
            client_id = (
                basic[0] if basic is not None else (await body_params(request)).get("client_id", "")
            )
        except GatewayError:
            return False  # the endpoint has answered why
        if not client_id:
            return False
        found = await self.store.get_client(client_id)
        return found is not None and origin in origins(found.client)
