"""Where a route's requests go: an upstream's origin and base path, per environment."""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from gateway.config import Upstream
from gateway.pipeline.paths import NormalPath
from gateway.pipeline.routes import CompiledRoute


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    origin: str  # scheme://host:port
    host: str
    port: int
    tls: bool
    base_path: str
    read_timeout: float  # seconds of upstream silence before 504
    connect_timeout: float

    @classmethod
    def of(cls, name: str, upstream: Upstream, test: bool = False) -> Target:
        url = URL(str(upstream.test_url if test else upstream.url))
        return cls(
            name=name,
            origin=str(url.origin()),
            host=url.raw_host or "",
            port=url.port or (443 if url.scheme == "https" else 80),
            tls=url.scheme == "https",
            base_path=url.raw_path.rstrip("/"),
            read_timeout=upstream.timeout,
            connect_timeout=upstream.connect_timeout,
        )

    def path_for(self, route: CompiledRoute, path: NormalPath) -> str:
        """The request target: base path, the matched path minus strip_prefix, query."""
        forwarded = path.forward_path(route.strip_segments, self.base_path)
        return f"{forwarded}?{path.query}" if path.query else forwarded

    def url_for(self, route: CompiledRoute, path: NormalPath) -> str:
        return self.origin + self.path_for(route, path)


def target_key(upstream: str, environment: str) -> str:
    """An upstream's target for one environment, as ``Forwarder.targets`` names it."""
    return upstream if environment == "live" else f"{upstream}#{environment}"
