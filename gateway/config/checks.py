"""Checks of config.yaml that span keys: what routes name, and routes that tie."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.config.sections import Route

if TYPE_CHECKING:
    from gateway.config import Settings


def case_insensitive(settings: Settings) -> frozenset[str]:
    """The upstreams whose routing ignores case."""
    return frozenset(name for name, u in settings.upstreams.items() if u.case_insensitive)


def route_ties(routes: Sequence[Route], folded: frozenset[str] = frozenset()) -> list[str]:
    """Routes that match the same requests equally well, which the route table could
    not tell apart: the same literal segments (compared without case on the
    ``folded`` upstreams, those with ``case_insensitive: true``), parameters in the
    same places, both ending in ``/**`` or neither, and a method in common (or both
    for any method)."""

    def describe(r: Route) -> str:
        return f"{r.path} [{','.join(sorted(r.methods)) if r.methods else 'any method'}]"

    seen: dict[tuple[tuple[str, ...], str], int] = {}
    problems = []
    for i, route in enumerate(routes):
        fold = route.upstream in folded
        shape = tuple(
            "{}" if s.startswith("{") else s.lower() if fold else s
            for s in route.path.split("/")
            if s
        )
        for method in sorted(route.methods) if route.methods else ("*",):
            earlier = seen.setdefault((shape, method), i)
            if earlier != i:
                problems.append(
                    f"routes[{i}]: ties with routes[{earlier}]: {describe(route)} and "
                    f"{describe(routes[earlier])} match the same requests equally well; "
                    "make one more specific"
                )
                break
    return problems


def cross_check(settings: Settings) -> list[str]:
    """Checks that span keys: scopes and upstreams named by routes, and route ties."""
    problems = []
    for i, route in enumerate(settings.routes):
        if route.upstream not in settings.upstreams:
            known = ", ".join(sorted(settings.upstreams)) or "none are declared"
            problems.append(
                f"routes[{i}].upstream: unknown upstream {route.upstream!r} (known: {known})"
            )
        for j, scope in enumerate(route.scopes):
            if scope not in settings.scopes:
                problems.append(f"routes[{i}].scopes[{j}]: unknown scope {scope!r}")
        if route.auth == "none" and route.scopes:
            problems.append(f"routes[{i}].scopes: a route with 'auth: none' cannot require scopes")
        if route.auth == "none" and route.cost:
            problems.append(f"routes[{i}].cost: a public route has nobody to charge")
        if route.strip_prefix is not None and not strips_cleanly(route.path, route.strip_prefix):
            problems.append(
                f"routes[{i}].strip_prefix: {route.strip_prefix!r} is not a leading "
                f"run of literal segments of {route.path!r}"
            )
    for j, scope in enumerate(settings.oauth.default_scopes):
        if scope not in settings.scopes:
            problems.append(f"oauth.default_scopes[{j}]: unknown scope {scope!r}")
    if settings.tokens.format == "jwt" and not settings.tokens.signing_keys:
        problems.append("tokens.signing_keys: JWT access tokens need at least one signing key")
    if settings.identity_assertion.enabled and not settings.tokens.signing_keys:
        problems.append("tokens.signing_keys: identity assertions need at least one signing key")
    kids = [k.kid for k in settings.tokens.signing_keys]
    if len(set(kids)) != len(kids):
        problems.append("tokens.signing_keys: two keys share a kid")
    seen_plugins: set[str] = set()
    for i, plugin in enumerate(settings.plugins):
        if plugin.name in seen_plugins:
            problems.append(f"plugins[{i}].name: {plugin.name!r} is listed twice")
        seen_plugins.add(plugin.name)
        for j, scope in enumerate(plugin.scopes):
            if scope not in settings.scopes:
                problems.append(f"plugins[{i}].scopes[{j}]: unknown scope {scope!r}")
    paths = settings.oauth.paths.model_dump()
    if len(set(paths.values())) != len(paths):
        problems.append("oauth.paths: two endpoints share a path")
    names: dict[str, int] = {}
    for i, route in enumerate(settings.routes):
        if route.id is not None:
            if route.id in names:
                problems.append(
                    f"routes[{i}].id: {route.id!r} is already used by routes[{names[route.id]}]"
                )
            names[route.id] = i
    if not problems:
        problems += route_ties(settings.routes, case_insensitive(settings))
    return problems


def strips_cleanly(path: str, prefix: str) -> bool:
    if not prefix.startswith("/") or prefix.endswith("/"):
        return False
    head = prefix.split("/")[1:]
    segments = path.split("/")[1:]
    return (
        len(head) <= len(segments)
        and segments[: len(head)] == head
        and not any(s.startswith("{") or s == "**" for s in head)
    )
