"""Authorization server metadata, RFC 8414, at /.well-known/oauth-authorization-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import ADMIN_SCOPE, Settings
from gateway.oauth.jwt_tokens import JWKS_PATH

WELL_KNOWN = "/.well-known/oauth-authorization-server"


def issuer(settings: Settings) -> str:
    return str(settings.public_url).rstrip("/")


def metadata(settings: Settings) -> dict[str, Any]:
    base = issuer(settings)
    paths = settings.oauth.paths
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": base,
        "authorization_endpoint": base + paths.authorize,
        "token_endpoint": base + paths.token,
        "revocation_endpoint": base + paths.revoke,
        "introspection_endpoint": base + paths.introspect,
        "scopes_supported": sorted(
            s for s in settings.scopes if s != ADMIN_SCOPE or settings.oauth.allow_admin_scope
        ),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods[:2],
        "authorization_response_iss_parameter_supported": True,
        **({"jwks_uri": base + JWKS_PATH} if settings.tokens.format == "jwt" else {}),
    }


def metadata_handler(current: Callable[[], Settings]) -> web.Handler:  # type: ignore[name-defined]
    """``current``: the settings now (the scope catalog changes on a reload)."""

    async def handler(request: web.Request) -> web.Response:
        body = metadata(current())
        return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})

    return handler
