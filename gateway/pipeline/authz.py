"""Authorization: a principal must hold every scope its route requires."""

from __future__ import annotations

from gateway.errors import InsufficientScope
from gateway.pipeline.authn import Principal
from gateway.pipeline.routes import CompiledRoute


def require_scopes(route: CompiledRoute, principal: Principal) -> None:
    """Raise for the first required scope the principal lacks (RFC 6750 §3.1)."""
    for scope in route.scopes:
        if scope not in principal.scopes:
            raise InsufficientScope(scope, route.scopes)
