"""config.yaml as pydantic models.

``load_config`` validates once at start-up and fails fast: every problem is
reported as ``<file>: <key path>: <what was expected>``, unknown keys included.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from gateway.errors import ConfigError

DEFAULT_CONFIG = "config.yaml"
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
    timeout: float = Field(30.0, gt=0, description="seconds to wait for response headers")
    connect_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(100, ge=1)


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

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{c!r} is not an IP address or CIDR") from None
        return cidrs


class Limits(Strict):
    """Defaults for every credential and organization; a key's own limits only tighten."""

    per_credential: int | None = Field(10_000, gt=0, description="requests per minute")
    per_org: int | None = Field(10_000, gt=0, description="requests per minute")


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


class OAuthPaths(Strict):
    """Where the OAuth endpoints are mounted; they take precedence over routes."""

    authorize: str = "/oauth/authorize"
    token: str = "/oauth/token"  # noqa: S105 - a path, not a secret
    revoke: str = "/oauth/revoke"
    introspect: str = "/oauth/introspect"
    login: str = "/oauth/login"
    logout: str = "/oauth/logout"

    @field_validator("*")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/") or "?" in path or "#" in path or "{" in path:
            raise ValueError("expected an absolute path such as /oauth/token")
        return path


class Throttle(Strict):
    """Failed-login limits, in the `limits` library's notation ("5/15 minutes")."""

    per_account: str = "5/15 minutes"
    per_ip: str = "30/15 minutes"

    @field_validator("per_account", "per_ip")
    @classmethod
    def _parses(cls, text: str) -> str:
        from limits import parse

        try:
            parse(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a rate such as '5/15 minutes'") from None
        return text


class OAuth(Strict):
    paths: OAuthPaths = OAuthPaths()
    access_token_ttl: int = Field(3600, gt=0, description="seconds")
    refresh_token_ttl: int = Field(30 * 86400, gt=0, description="seconds")
    code_ttl: int = Field(60, gt=0, le=600, description="seconds")
    default_scopes: tuple[str, ...] = Field((), description="granted when scope is omitted")
    require_pkce: Literal["public", "all"] = "public"
    allow_admin_scope: bool = Field(False, description="let OAuth clients be granted gateway:admin")
    access_token_header: bool = Field(
        False, description="also accept the credential in an 'access_token:' header"
    )
    login_throttle: Throttle = Throttle()


class Session(Strict):
    secret: str | None = Field(
        None, description="32+ characters shared by every node; random per process when unset"
    )
    cookie_name: str = "gateway_session"
    max_age: int = Field(8 * 3600, gt=0, description="seconds a login lasts")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: str | None) -> str | None:
        if secret is not None and len(secret) < 32:
            raise ValueError("use at least 32 random characters")
        return secret


class Management(Strict):
    prefix: str = "/_gateway/v1"
    rotation_grace: float = Field(
        0, ge=0, le=30 * 86400, description="seconds a rotated key's old secret still works"
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/") or prefix.endswith("/") or "{" in prefix or "?" in prefix:
            raise ValueError("expected an absolute path without a trailing '/'")
        return prefix


class Dashboard(Strict):
    path: str = "/dashboard"

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return Management._prefix(path)


class Plugin(Strict):
    """A first-party plugin that gets client-credentials access without manual set-up."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    org: str = Field(min_length=1, description="organization id or name")
    scopes: tuple[str, ...] = Field(min_length=1)


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True


class Settings(Strict):
    workers: int | Literal["auto"] = Field(
        "auto", description="processes serving the public port; auto: one per core"
    )
    listen: Listener = Listener()
    admin: Listener = Listener(port=9090)
    public_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    database: Database = Database()
    scopes: dict[str, str] = {}
    upstreams: dict[str, Upstream] = {}
    routes: tuple[Route, ...] = ()
    proxy: Proxy = Proxy()
    limits: Limits = Limits()
    redis: RedisSettings = RedisSettings()
    cache: Cache = Cache()
    usage: Usage = Usage()
    oauth: OAuth = OAuth()
    session: Session = Session()
    management: Management = Management()
    dashboard: Dashboard = Dashboard()
    plugins: tuple[Plugin, ...] = ()
    logging: Logging = Logging()

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="<settings>")

    @field_validator("scopes")
    @classmethod
    def _scope_names(cls, scopes: dict[str, str]) -> dict[str, str]:
        for name in scopes:
            if not SCOPE_NAME.match(name):
                raise ValueError(f"bad scope name {name!r}")
        # Always in the catalog, whatever the file says.
        return {**scopes, ADMIN_SCOPE: scopes.get(ADMIN_SCOPE) or ADMIN_SCOPE_TEXT}

    @field_validator("upstreams")
    @classmethod
    def _upstream_names(cls, upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
        for name in upstreams:
            if not UPSTREAM_NAME.match(name):
                raise ValueError(f"bad upstream name {name!r}")
        return upstreams

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return max(1, os.cpu_count() or 1)
        return max(1, self.workers)

    @property
    def source(self) -> str:
        return self._source

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file, relative paths taken from the config file's folder."""
        raw = self.database.url.removeprefix("sqlite:///")
        if raw == ":memory:":
            return Path(raw)
        path = Path(raw)
        return path if path.is_absolute() else self._base_dir / path

    def located(self, base_dir: Path, source: str) -> Settings:
        self._base_dir = base_dir
        self._source = source
        return self


# Environment variables that override keys of the file: secrets and URLs.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "GATEWAY_DATABASE_URL": ("database", "url"),
    "GATEWAY_PUBLIC_URL": ("public_url",),
    "GATEWAY_LISTEN_HOST": ("listen", "host"),
    "GATEWAY_LISTEN_PORT": ("listen", "port"),
    "GATEWAY_ADMIN_HOST": ("admin", "host"),
    "GATEWAY_ADMIN_PORT": ("admin", "port"),
    "GATEWAY_SESSION_SECRET": ("session", "secret"),
    "GATEWAY_REDIS_URL": ("redis", "url"),
}
UPSTREAM_URL_ENV = re.compile(r"^GATEWAY_UPSTREAM_([A-Z0-9_]+)_URL$")


def config_path(explicit: str | None = None) -> Path:
    """The config file: ``--config``, else ``GATEWAY_CONFIG``, else ./config.yaml."""
    return Path(explicit or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: the file is not UTF-8"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping of keys at the top level"])
    apply_env(raw, env)
    return settings_from_dict(raw, base_dir=path.resolve().parent, source=source)


def settings_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, source: str = "<settings>"
) -> Settings:
    """Validate a raw mapping (as read from YAML) into Settings, or raise ConfigError."""
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            [f"{source}: {key_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        ) from None
    problems = [f"{source}: {p}" for p in cross_check(settings)]
    if problems:
        raise ConfigError(problems)
    return settings.located(base_dir or Path.cwd(), source)


def apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, keys in ENV_OVERRIDES.items():
        if var in env:
            set_key(raw, keys, env[var])
    upstreams = raw.get("upstreams")
    if not isinstance(upstreams, dict):
        return
    by_env_name = {re.sub(r"[^A-Z0-9]", "_", str(n).upper()): n for n in upstreams}
    for var, value in env.items():
        m = UPSTREAM_URL_ENV.match(var)
        if m and m.group(1) in by_env_name:
            set_key(raw, ("upstreams", by_env_name[m.group(1)], "url"), value)


def set_key(raw: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def key_path(loc: tuple[int | str, ...]) -> str:
    """('routes', 3, 'scopes', 0) -> 'routes[3].scopes[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def cross_check(settings: Settings) -> list[str]:
    """Checks that span keys: scopes and upstreams named by routes, and route ties."""
    from gateway.pipeline.routes import RouteConflict, RouteTable

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
        try:
            RouteTable(settings.routes)
        except RouteConflict as exc:
            problems.append(str(exc))
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
