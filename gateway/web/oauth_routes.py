"""The OAuth server's endpoints on the public app: built at start-up (``oauth_server``),
routed at creation (``add_oauth_routes``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.accounts.sign_in import SignIn
from gateway.config import Settings
from gateway.errors import NoRoute
from gateway.metering.counters import Counters
from gateway.oauth.authorize import Authorization
from gateway.oauth.introspection import IntrospectionEndpoint
from gateway.oauth.jwt_tokens import JWKS_PATH, JwtCodec
from gateway.oauth.metadata import WELL_KNOWN, issuer, metadata_handler
from gateway.oauth.revocation import RevocationEndpoint
from gateway.oauth.token_endpoint import TokenEndpoint
from gateway.oauth.token_service import TokenService
from gateway.pipeline.headers import ForwardedFor
from gateway.store import Store
from gateway.web.consent import ConsentViews
from gateway.web.endpoints import add_endpoint, bound
from gateway.web.login import LoginViews
from gateway.web.session import Sessions
from gateway.web.token_cors import TokenCors

SIGNER: Final = web.AppKey("signer", JwtCodec)  # the token signing keys, when configured


@dataclass(frozen=True, slots=True)
class OAuthServer:
    """The OAuth endpoints and pages, built at start-up."""

    authorize: ConsentViews
    token: TokenEndpoint
    revoke: RevocationEndpoint
    introspect: IntrospectionEndpoint
    login: LoginViews
    cors: TokenCors  # for the token and revocation endpoints


OAUTH: Final = web.AppKey("oauth", OAuthServer)


def oauth_server(
    settings: Settings,
    store: Store,
    tokens: TokenService,
    sessions: Sessions,
    forwarded_for: ForwardedFor,
    counters: Counters,
) -> OAuthServer:
    sign_in = SignIn(store, settings.oauth.login_throttle, counters)
    return OAuthServer(
        authorize=ConsentViews(Authorization(store, settings), settings, sessions),
        token=TokenEndpoint(store, tokens, sign_in, forwarded_for),
        revoke=RevocationEndpoint(store, tokens),
        cors=TokenCors(store),
        introspect=IntrospectionEndpoint(store, tokens, issuer(settings)),
        login=LoginViews(
            store,
            settings,
            sessions,
            sign_in,
            forwarded_for,
        ),
    )


async def jwks(request: web.Request) -> web.Response:
    """RFC 7517 key set for JWT access tokens and identity assertions; absent (404)
    without signing keys."""
    signer = request.app.get(SIGNER)
    if signer is None:
        raise NoRoute()
    return web.json_response(signer.jwks(), headers={"Cache-Control": "public, max-age=300"})


def add_oauth_routes(
    app: web.Application, settings: Settings, current: Callable[[], Settings]
) -> None:
    """The OAuth endpoints, the metadata document (of the settings ``current`` gives)
    and the JWKS."""
    paths = settings.oauth.paths
    table = {
        "authorize": (paths.authorize, {
            "GET": bound(OAUTH, lambda o, r: o.authorize.get(r)),
            "POST": bound(OAUTH, lambda o, r: o.authorize.post(r)),
        }),
        "login": (paths.login, {
            "GET": bound(OAUTH, lambda o, r: o.login.get(r)),
            "POST": bound(OAUTH, lambda o, r: o.login.post(r)),
        }),
        "logout": (paths.logout, {"POST": bound(OAUTH, lambda o, r: o.login.logout(r))}),
        "token": (paths.token, {
            "POST": bound(OAUTH, lambda o, r: o.cors.around(o.token.handle)(r)),
            "OPTIONS": bound(OAUTH, lambda o, r: o.cors.preflight(r)),
        }),
        "revoke": (paths.revoke, {
            "POST": bound(OAUTH, lambda o, r: o.cors.around(o.revoke.handle)(r)),
            "OPTIONS": bound(OAUTH, lambda o, r: o.cors.preflight(r)),
        }),
        "introspect": (paths.introspect, {
            "POST": bound(OAUTH, lambda o, r: o.introspect.handle(r)),
        }),
    }  # fmt: skip
    for name, (path, methods) in table.items():
        add_endpoint(app, path, "oauth:" + name, methods)
    app.router.add_get(WELL_KNOWN, metadata_handler(current))
    app.router.add_get(JWKS_PATH, jwks)
