"""config.yaml: the Settings model and loading it (sections in ``sections.py``).

``load_config`` validates once at start-up and fails fast: every problem is
reported as ``<file>: <key path>: <what was expected>``, unknown keys included.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from gateway.config.checks import case_insensitive, cross_check, route_ties
from gateway.config.sections import (
    ADMIN_SCOPE,
    ADMIN_SCOPE_TEXT,
    SCOPE_NAME,
    UPSTREAM_NAME,
    Cache,
    Cors,
    Database,
    Decision,
    Events,
    IdentityAssertion,
    Limits,
    Listener,
    Logging,
    Proxy,
    RedisSettings,
    Route,
    Strict,
    Tracing,
    Upstream,
    Usage,
)
from gateway.config.services import (
    DashboardSettings,
    Management,
    OAuth,
    OAuthPaths,
    Plugin,
    Session,
    SigningKey,
    Throttle,
    Tokens,
)
from gateway.errors import ConfigError

DEFAULT_CONFIG = "config.yaml"


class Settings(Strict):
    workers: int | Literal["auto"] = Field(
        "auto", description="processes serving the public port; auto: one per core"
    )
    listen: Listener = Listener()
    admin: Listener = Listener(port=9090)
    public_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8080")
    database: Database = Database()
    scopes: dict[str, str] = Field(default_factory=dict)
    upstreams: dict[str, Upstream] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    proxy: Proxy = Proxy()
    decision: Decision = Decision()
    identity_assertion: IdentityAssertion = IdentityAssertion()
    limits: Limits = Limits()
    redis: RedisSettings = RedisSettings()
    cache: Cache = Cache()
    usage: Usage = Usage()
    oauth: OAuth = OAuth()
    session: Session = Session()
    management: Management = Management()
    dashboard: DashboardSettings = DashboardSettings()
    plugins: tuple[Plugin, ...] = ()
    tokens: Tokens = Tokens()
    logging: Logging = Logging()
    server_header: str = Field(
        "gateway", pattern=r"^[!-~]+( [!-~]+)*$", max_length=100,
        description="the Server field of the gateway's own answers (no version by default)",
    )  # fmt: skip
    events: Events = Events()
    tracing: Tracing = Tracing()

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

    def path_of(self, name: str) -> Path:
        """A file named in the config, relative to the config file's folder."""
        path = Path(name)
        return path if path.is_absolute() else self._base_dir / path

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


# What a running node can take from a changed config file; the rest needs a restart.
RELOADABLE = frozenset(
    {"scopes", "upstreams", "routes", "proxy", "limits", "decision", "identity_assertion"}
)


def config_hash(settings: Settings) -> str:
    """A short digest of the settings, to see that every node runs the same config."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def fixed_changes(before: Settings, after: Settings) -> list[str]:
    """The settings that changed but cannot change while the node runs."""
    changed = [
        name
        for name in Settings.model_fields
        if name not in RELOADABLE and getattr(before, name) != getattr(after, name)
    ]
    if before.limits.node_counters != after.limits.node_counters:
        changed.append("limits.node_counters")
    return changed


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
        raise ConfigError([yaml_problem(source, exc)]) from None
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
        raise ConfigError([f"{source}: {problem(e['type'], e['loc'], e['msg'])}"
                           for e in exc.errors()]) from None  # fmt: skip
    problems = [f"{source}: {p}" for p in cross_check(settings)]
    if problems:
        raise ConfigError(problems)
    return settings.located(base_dir or Path.cwd(), source)


def yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    """A YAML syntax error as ``file:line:column: what``, lines counted from 1."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"{source}: not valid YAML: {what}"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {what}"


def problem(kind: str, loc: tuple[int | str, ...], message: str) -> str:
    """One validation error, named by its key path; an unknown key with the known key it
    most looks like (``logging.levle: unknown key (did you mean 'level'?)``)."""
    if kind != "extra_forbidden" or not loc:
        return f"{key_path(loc)}: {message}"
    return f"{key_path(loc)}: unknown key{suggestion(loc)}"


def suggestion(loc: tuple[int | str, ...]) -> str:
    current: Any = Settings
    for part in loc[:-1]:
        model = model_in(current)
        if model is None:
            return ""
        field = model.model_fields.get(part) if isinstance(part, str) else None
        current = field.annotation if field is not None else model  # else an index or a name
    model = model_in(current)
    known = list(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model an annotation is or holds (``X | None``, ``tuple[X, ...]``,
    ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


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


__all__ = [
    "ADMIN_SCOPE",
    "RELOADABLE",
    "Cache",
    "ConfigError",
    "Cors",
    "DashboardSettings",
    "Database",
    "Decision",
    "IdentityAssertion",
    "Limits",
    "Listener",
    "Logging",
    "Management",
    "OAuth",
    "OAuthPaths",
    "Plugin",
    "Proxy",
    "RedisSettings",
    "Route",
    "Session",
    "Settings",
    "SigningKey",
    "Throttle",
    "Tokens",
    "Upstream",
    "Usage",
    "case_insensitive",
    "config_hash",
    "config_path",
    "fixed_changes",
    "key_path",
    "load_config",
    "route_ties",
    "settings_from_dict",
]
