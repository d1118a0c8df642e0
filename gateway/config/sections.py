"""The sections of config.yaml, one pydantic model each (unknown keys are errors); the
OAuth server's, the sessions' and the management side's are in ``services.py``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

ADMIN_SCOPE = "gateway:admin"  # built in: manage one's own organization through the API
ADMIN_SCOPE_TEXT = "Manage this organization's API keys, apps and usage"
SCOPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
METHOD_TOKEN = re.compile(r"^[A-Z][A-Z0-9_\-]*$")
SEGMENT_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=0, le=65535)]


class Listener(Strict):
    host: str = "127.0.0.1"
    port: Port = 8080


class Database(Strict):
    url: str = "sqlite:///gateway.db"
    pool_min: int = Field(1, ge=0, description="PostgreSQL connections kept open")
    pool_max: int = Field(10, ge=1, description="PostgreSQL connections at most, per process")
    timeout: float = Field(5.0, gt=0, description="seconds any database call may take")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url.startswith(("postgresql://", "postgres://")):
            return url
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise ValueError(
                "expected sqlite:///PATH (relative to this file) or postgresql://USER@HOST/DB"
            )
        return url

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))


class Upstream(Strict):
    url: AnyHttpUrl
    test_url: AnyHttpUrl | None = Field(
        None, description="where test-mode credentials go; without it they are refused (403)"
    )
    timeout: float = Field(30.0, gt=0, description="seconds to wait for response headers")
    connect_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(100, ge=1)
    case_insensitive: bool = Field(
        False, description="the upstream routes paths without regard to case (Express, ASP.NET)"
    )


ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def mount_path(path: str) -> str:
    """Where the gateway serves something of its own: an absolute path, no trailing
    '/', no pattern or query."""
    if (
        not path.startswith("/")
        or path.endswith("/")
        or any(c in path for c in "{?")
        or ("//" in path)
    ):
        raise ValueError("expected an absolute path without a trailing '/', '{', '?' or '//'")
    return path


class Cors(Strict):
    """CORS for one route (the Fetch standard's CORS protocol): preflights answered by
    the gateway, allowed origins named on actual responses."""

    origins: tuple[str, ...] = Field(description="scheme://host[:port] each, or '*'")
    methods: tuple[str, ...] | None = Field(None, description="default: the route's methods")
    headers: tuple[str, ...] = ("Authorization", "X-API-Key", "Content-Type")
    expose_headers: tuple[str, ...] = ("X-Request-Id",)
    max_age: int = Field(600, ge=0, description="seconds a browser may cache a preflight")
    credentials: bool = False

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        if not origins:
            raise ValueError("list at least one origin")
        for origin in origins:
            if origin != "*" and not ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return tuple(o.lower() for o in origins)

    @model_validator(mode="after")
    def _star(self) -> Cors:
        if "*" in self.origins and self.credentials:
            raise ValueError("'*' is allowed only without credentials")
        return self


class Route(Strict):
    path: str
    upstream: str
    methods: tuple[str, ...] | None = None
    scopes: tuple[str, ...] = ()
    auth: Literal["required", "none"] = "required"
    id: str | None = Field(None, description="a stable name used in metrics and logs")
    strip_prefix: str | None = None
    max_body_size: int | None = Field(None, ge=0)
    cost: int | None = Field(None, ge=1, description="wallet credits per successful call")
    allow_path_params: bool = Field(
        False, description="accept ';parameters' in path segments (for upstreams that use them)"
    )
    cors: Cors | None = None
    websocket: bool = Field(
        False, description="accept WebSocket handshakes (GET with Upgrade: websocket)"
    )
    environments: tuple[Literal["live", "test"], ...] = Field(
        ("live", "test"), min_length=1, description="the credentials' environments it serves"
    )

    @field_validator("path")
    @classmethod
    def _valid_pattern(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("a route path starts with '/'")
        segments = [s for s in path.split("/")[1:]]
        if path != "/" and "" in segments:
            raise ValueError("a route path has no empty segments ('//' or a trailing '/')")
        for i, seg in enumerate(segments):
            if seg == "**":
                if i != len(segments) - 1:
                    raise ValueError("'**' is allowed only as the last segment")
            elif seg.startswith("{") or seg.endswith("}"):
                if not SEGMENT_PARAM.match(seg):
                    raise ValueError(f"bad parameter segment {seg!r}; expected {{name}}")
            elif any(c in seg for c in "{}*%\\?#") or seg in (".", ".."):
                raise ValueError(f"bad literal segment {seg!r}")
        return path

    @field_validator("methods")
    @classmethod
    def _valid_methods(cls, methods: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if methods is None:
            return None
        if not methods:
            raise ValueError("list at least one method, or omit 'methods' for all")
        upper = tuple(m.upper() for m in methods)
        for m in upper:
            if not METHOD_TOKEN.match(m):
                raise ValueError(f"bad HTTP method {m!r}")
        if len(set(upper)) != len(upper):
            raise ValueError("a method is listed twice")
        return upper

    @model_validator(mode="after")
    def _websocket_get(self) -> Route:
        if self.websocket and self.methods is not None and "GET" not in self.methods:
            raise ValueError("a websocket route must allow GET (the handshake's method)")
        return self

    @property
    def name(self) -> str:
        """The route's label in metrics and logs: its ``id`` or its path pattern."""
        return self.id or self.path


class Proxy(Strict):
    trusted_proxies: tuple[str, ...] = Field(
        (), description="CIDRs whose X-Forwarded-For is believed"
    )
    max_body_size: int | None = Field(
        None, ge=0, description="bytes; default for routes without their own; null = unlimited"
    )
    max_connections: int = Field(
        10_000, ge=1, description="client connections per worker; past it the idlest go first"
    )
    header_timeout: float = Field(
        10.0, gt=0, description="seconds for a request head to arrive in full (then 408)"
    )
    websocket_idle_timeout: float = Field(
        300.0, gt=0, description="seconds a WebSocket may stay silent both ways before it closes"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not an IP address or CIDR") from None
        return cidrs


class Decision(Strict):
    """The decision endpoint for a proxy in front (nginx auth_request, Traefik
    forwardAuth, Envoy ext_authz): "may this request pass, and as whom?"."""

    enabled: bool = False
    path: str = Field("/_gateway/decide", description="served on the public listener")

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return mount_path(path)


class IdentityAssertion(Strict):
    """A short-lived JWT on every forwarded request, proving that the identity headers
    came from the gateway (signed with ``tokens.signing_keys``)."""

    enabled: bool = False
    header: str = Field("X-Gateway-Assertion", pattern=r"^[A-Za-z0-9-]+$")
    ttl: int = Field(60, gt=0, le=3600, description="seconds an assertion is valid")


class Limits(Strict):
    """Defaults for every credential and organization; a key's own limits only tighten."""

    per_credential: int | None = Field(10_000, gt=0, description="requests per minute")
    per_org: int | None = Field(10_000, gt=0, description="requests per minute")
    node_counters: int = Field(
        65_536,
        ge=1024,
        description="slots of the counters table a node's workers share (40 bytes each)",
    )


class RedisSettings(Strict):
    """Shared counters for several nodes: rate limits, quotas, login throttling."""

    url: str | None = Field(None, description="redis://HOST:PORT/DB; unset: count in process")
    timeout: float = Field(0.5, gt=0, description="seconds a Redis call may take")
    on_failure: Literal["closed", "open"] = Field(
        "closed", description="Redis unreachable: refuse limited requests (503) or admit them"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://HOST:PORT/DB")
        return url


class Cache(Strict):
    credential_ttl: float = Field(30.0, ge=0, description="seconds a verified credential is kept")
    max_entries: int = Field(100_000, ge=0)
    poll_interval: float = Field(
        0.5, gt=0, description="seconds between checks for revoked credentials"
    )


class Usage(Strict):
    flush_interval: float = Field(5.0, gt=0, description="seconds between last_used_at flushes")


class Events(Strict):
    """Events and their webhook deliveries (``gateway.events``)."""

    allow_http: bool = Field(False, description="accept http:// subscription URLs")
    allow_private_targets: bool = Field(
        False, description="deliver to loopback, private, link-local or reserved addresses"
    )
    retry_schedule: tuple[float, ...] = Field(
        (5, 300, 1800, 7200, 18000, 36000, 36000),
        description="seconds before each retry of a failed delivery",
    )
    auth_failures_spike: int = Field(
        100, ge=1, description="401/403 answers per minute for one organization that are a spike"
    )
    expiry_scan_interval: float = Field(
        3600, gt=0, description="seconds between scans for expiring keys"
    )
    poll_interval: float = Field(1.0, gt=0, description="seconds between looks for due deliveries")

    @field_validator("retry_schedule")
    @classmethod
    def _delays(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 for d in delays):
            raise ValueError("every delay is a number of seconds above 0")
        return delays


class Tracing(Strict):
    """Spans of proxied requests exported over OTLP/HTTP (``gateway.tracing``)."""

    otlp_endpoint: str | None = Field(
        None, description="e.g. http://127.0.0.1:4318/v1/traces; null: no export"
    )
    service_name: str = "gateway"


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
