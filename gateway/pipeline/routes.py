"""The compiled route map: a segment trie, matched most-specific first.

Specificity is decided segment by segment from the left: a literal segment
beats a ``{param}``, which beats a trailing ``/**``; so a longer literal prefix
beats a shorter one. At the same pattern a route that lists methods beats one
that does not. Two routes of the same pattern whose methods overlap tie, and a
tie is a configuration error. ``/**`` matches its prefix itself and everything
below it. A route that lists GET also answers HEAD unless another route at the
same pattern lists HEAD.

Matching walks one trie path per segment (with backtracking only across the
literal/param/glob alternatives), so its cost grows with the depth of the path,
not with the number of routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.config import Route, route_ties
from gateway.errors import MethodNotAllowed, NoRoute
from gateway.pipeline.cors import CorsPolicy


class RouteConflict(Exception):
    """Two routes tie; raised while the table is built from config."""


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    index: int
    name: str
    path: str
    methods: frozenset[str] | None
    scopes: tuple[str, ...]
    public: bool
    upstream: str
    strip_segments: int
    param_names: tuple[str, ...]
    max_body_size: int | None
    cost: int | None = None
    path_params: bool = False  # ";parameters" in segments are the upstream's to read
    cors: CorsPolicy | None = None
    websocket: bool = False  # WebSocket handshakes accepted (``gateway.http.tunnel``)
    environments: frozenset[str] = frozenset({"live", "test"})

    @classmethod
    def from_config(cls, index: int, route: Route) -> CompiledRoute:
        segments = pattern_segments(route.path)
        return cls(
            index=index,
            name=route.name,
            path=route.path,
            methods=frozenset(route.methods) if route.methods else None,
            scopes=route.scopes,
            public=route.auth == "none",
            upstream=route.upstream,
            strip_segments=len(pattern_segments(route.strip_prefix)) if route.strip_prefix else 0,
            param_names=tuple(s[1:-1] for s in segments if s.startswith("{")),
            max_body_size=route.max_body_size,
            cost=route.cost,
            path_params=route.allow_path_params,
            cors=CorsPolicy.of(route.cors, frozenset(route.methods) if route.methods else None)
            if route.cors is not None
            else None,
            websocket=route.websocket,
            environments=frozenset(route.environments),
        )


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class Match:
    route: CompiledRoute
    params: dict[str, str]


@dataclass(slots=True)
class _Endpoint:
    """The routes that end at one trie node, as an exact pattern or as ``/**``."""

    by_method: dict[str, CompiledRoute] = field(default_factory=dict)
    any_method: CompiledRoute | None = None

    def add(self, route: CompiledRoute) -> None:
        if route.methods is None:
            self.any_method = route
            return
        for method in route.methods:
            self.by_method[method] = route

    def pick(self, method: str) -> CompiledRoute | None:
        route = self.by_method.get(method)
        if route is None and method == "HEAD":
            route = self.by_method.get("GET")
        return route or self.any_method

    def methods(self) -> set[str]:
        names = set(self.by_method)
        if "GET" in names:
            names.add("HEAD")
        return names


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    folded: dict[str, _Node] = field(default_factory=dict)  # lower-cased literals
    param: _Node | None = None
    exact: _Endpoint | None = None
    glob: _Endpoint | None = None


def pattern_segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


class RouteTable:
    def __init__(self, routes: Sequence[Route], folded: frozenset[str] = frozenset()) -> None:
        """``folded``: the upstreams whose routes match without regard to case."""
        ties = route_ties(routes, folded)  # the config's own check: one rule for what ties
        if ties:
            raise RouteConflict(ties[0])
        self._root = _Node()
        self.routes: list[CompiledRoute] = []
        for index, route in enumerate(routes):
            self._add(CompiledRoute.from_config(index, route), route.upstream in folded)

    def _add(self, route: CompiledRoute, fold: bool) -> None:
        node = self._root
        segments = pattern_segments(route.path)
        glob = bool(segments) and segments[-1] == "**"
        for seg in segments[:-1] if glob else segments:
            if seg.startswith("{"):
                node.param = node.param or _Node()
                node = node.param
            elif fold:
                node = node.folded.setdefault(seg.lower(), _Node())
            else:
                node = node.literal.setdefault(seg, _Node())
        if glob:
            node.glob = node.glob or _Endpoint()
            node.glob.add(route)
        else:
            node.exact = node.exact or _Endpoint()
            node.exact.add(route)
        self.routes.append(route)

    def match(self, method: str, segments: tuple[str, ...]) -> Match | None:
        values: list[str] = []
        route = self._walk(self._root, segments, 0, method, values)
        if route is None:
            return None
        return Match(route, dict(zip(route.param_names, values, strict=False)))

    def _walk(
        self, node: _Node, segs: tuple[str, ...], i: int, method: str, values: list[str]
    ) -> CompiledRoute | None:
        if i == len(segs):
            if node.exact is not None and (found := node.exact.pick(method)):
                return found
        else:
            for child in (node.literal.get(segs[i]), node.folded.get(segs[i].lower())):
                if child is not None and (found := self._walk(child, segs, i + 1, method, values)):
                    return found
            if node.param is not None:
                values.append(segs[i])
                if found := self._walk(node.param, segs, i + 1, method, values):
                    return found
                values.pop()
        if node.glob is not None:
            return node.glob.pick(method)
        return None

    def decide(self, method: str, segments: tuple[str, ...]) -> Match:
        """The route a request hits; 405 (with the methods allowed) or 404 otherwise."""
        found = self.match(method, segments)
        if found is None:
            allowed = self.allowed_methods(segments)
            raise MethodNotAllowed(method, allowed) if allowed else NoRoute()
        return found

    def allowed_methods(self, segments: tuple[str, ...]) -> tuple[str, ...]:
        """Every method some route would accept at this path (for 405's Allow)."""
        found: set[str] = set()
        self._collect(self._root, segments, 0, found)
        return tuple(sorted(found))

    def _collect(self, node: _Node, segs: tuple[str, ...], i: int, found: set[str]) -> None:
        if node.glob is not None:
            found |= node.glob.methods()
        if i == len(segs):
            if node.exact is not None:
                found |= node.exact.methods()
            return
        for child in (node.literal.get(segs[i]), node.folded.get(segs[i].lower())):
            if child is not None:
                self._collect(child, segs, i + 1, found)
        if node.param is not None:
            self._collect(node.param, segs, i + 1, found)
