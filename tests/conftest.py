"""Shared fixtures: a real upstream_example and a real gateway, both on loopback.

``gw`` builds the gateway app from settings and serves it as ``gateway serve``
does (``GatewayRunner``: the proxy engine, JSON for malformed HTTP), talking to it
over a socket through pytest-aiohttp's client. Keys are minted
through the same functions the CLI uses.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from playwright.async_api import Browser, async_playwright

from gateway.accounts import api_keys, users
from gateway.app import CACHE, STORE, AppStatus, create_app
from gateway.config import Settings, settings_from_dict
from gateway.http.server import GatewayRunner
from gateway.node.admin import create_admin_app
from gateway.oauth.clients import RegisteredClient, register_client
from gateway.store import Org, Store
from gateway.store.records import User
from upstream_example import create_app as create_upstream

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]
AiohttpServer = Callable[..., Awaitable[TestServer]]

SCOPES = {
    "contacts:read": "Read your contacts",
    "contacts:write": "Change your contacts",
    "products:read": "Search products",
    "admin:all": "Everything under /admin",
}


# PostgreSQL and Redis at their default local addresses serve the suites that need them
# when the variables are unset and the services answer: a newcomer's `make test` runs
# everything the machine can run.
LOCAL_SERVICES = {
    "GATEWAY_TEST_POSTGRES_URL": ("127.0.0.1", 5432, "postgresql://postgres@127.0.0.1:5432/test"),
    "GATEWAY_TEST_REDIS_URL": ("127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
}


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


for _var, (_host, _port, _url) in LOCAL_SERVICES.items():
    if not os.environ.get(_var) and answers(_host, _port):
        os.environ[_var] = _url


def pytest_report_header() -> str:
    """Which build of the compiled hot path this run tests (``make test`` runs both)."""
    from gateway.http import heads

    return "gateway.http.heads: " + ("compiled" if heads.COMPILED else "pure Python")


def pytest_sessionstart(session: Any) -> None:
    """A compiled hot path older than its source would test yesterday's code."""
    from gateway.http import heads

    source = Path(heads.__file__).with_name("heads.py")
    if heads.COMPILED and Path(heads.__file__).stat().st_mtime < source.stat().st_mtime:
        pytest.exit(f"{heads.__file__} is older than {source}: rebuild it (make install)", 2)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line naming what was skipped and why, so that a green run that skipped the
    PostgreSQL or multi-node suites says so."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = Counter(
        str(r.longrepr[2] if isinstance(r.longrepr, tuple) else r.longrepr).removeprefix(
            "Skipped: "
        )
        for r in skipped
    )
    listed = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common())
    terminalreporter.write_line(f"SKIPPED {len(skipped)} tests: {listed}", yellow=True)


PASSWORD = "correct horse battery"
REDIRECT_URI = "http://127.0.0.1:18999/callback"


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(upstream_url: str, db_path: Path) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"
    return {
        "workers": 1,
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "database": {"url": f"sqlite:///{db_path}"},
        "scopes": SCOPES,
        "upstreams": {
            "main": {"url": upstream_url, "timeout": 5},
            "slow": {"url": upstream_url, "timeout": 0.5},
            "down": {"url": dead, "timeout": 1, "connect_timeout": 1},
        },
        "routes": [
            {
                "path": "/contacts",
                "methods": ["GET", "HEAD"],
                "scopes": ["contacts:read"],
                "upstream": "main",
            },
            {
                "path": "/contacts/**",
                "methods": ["POST", "PATCH", "DELETE"],
                "scopes": ["contacts:write"],
                "upstream": "main",
            },
            {
                "path": "/contacts/{id}",
                "methods": ["GET"],
                "scopes": ["contacts:read"],
                "upstream": "main",
            },
            {"path": "/echo/**", "upstream": "main"},
            {
                "path": "/echo/scoped/**",
                "scopes": ["contacts:read", "contacts:write"],
                "upstream": "main",
            },
            {
                "path": "/public/echo/**",
                "auth": "none",
                "upstream": "main",
                "strip_prefix": "/public",
            },
            {
                "path": "/admin/echo/**",
                "scopes": ["admin:all"],
                "upstream": "main",
                "strip_prefix": "/admin",
            },
            {"path": "/bytes/{n}", "upstream": "main"},
            {"path": "/status", "auth": "none", "upstream": "main"},
            {"path": "/status/{code}", "auth": "none", "upstream": "main"},
            {"path": "/slow", "upstream": "slow"},
            {"path": "/slow-body", "upstream": "slow"},
            {"path": "/down/**", "upstream": "down"},
        ],
        "cache": {"credential_ttl": 30, "poll_interval": 0.1},
        "oauth": {"default_scopes": ["contacts:read"]},
        "usage": {"flush_interval": 0.2},
    }


@dataclass
class Gateway:
    """A running gateway app and the handles a test needs around it."""

    client: TestClient[Any, Any]
    app: web.Application
    settings: Settings
    db_path: Path
    admin: TestClient[Any, Any] | None = None

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def org(self, name: str = "acme") -> Org:
        found = await self.store.find_org(name)
        return found or await api_keys.create_org(self.store, name)

    async def mint(
        self, scopes: list[str], *, org: str = "acme", ttl: int | None = None, name: str = "test"
    ) -> api_keys.IssuedKey:
        return await api_keys.issue_api_key(
            self.store,
            await self.org(org),
            name=name,
            scopes=scopes,
            catalog=self.settings.scopes,
            ttl_seconds=ttl,
        )

    def db_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the SQLite file directly, as an auditor would."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute(sql))

    async def user(
        self,
        email: str = "ada@example.com",
        password: str = PASSWORD,
        orgs: tuple[str, ...] = ("acme",),
        role: str = "admin",
    ) -> User:
        """A person who can sign in, member of each of ``orgs`` (created if needed)."""
        for name in orgs:
            await self.org(name)
        user = await users.create_user(self.store, email, password, orgs[0], role)
        for name in orgs[1:]:
            await users.add_to_org(self.store, email, name, role)
        return user

    async def oauth_client(
        self,
        *,
        name: str = "Zap",
        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
        scopes: tuple[str, ...] = ("contacts:read", "contacts:write"),
        public: bool = False,
        grant_types: tuple[str, ...] = (),
        org: str | None = None,
        allow_user_auth: bool = False,
        allow_admin_scope: bool = False,
        allowed_origins: tuple[str, ...] = (),
    ) -> RegisteredClient:
        if org is not None:
            await self.org(org)
        return await register_client(
            self.store,
            name=name,
            redirect_uris=redirect_uris,
            scopes=scopes,
            catalog=self.settings.scopes,
            public=public,
            grant_types=grant_types,
            org=org,
            allow_user_auth=allow_user_auth,
            allow_admin_scope=allow_admin_scope,
            allowed_origins=allowed_origins,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.client.server.port}"

    @property
    def cache_size(self) -> int:
        return len(self.app[CACHE])


@pytest.fixture
def upstream_seen() -> list[str]:
    """Every raw path the upstream answered, in order: proof of what was forwarded."""
    return []


@pytest.fixture
async def upstream_url(aiohttp_server: AiohttpServer, upstream_seen: list[str]) -> str:
    """The real upstream_example on loopback, recording the paths it answers."""
    app = create_upstream()

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        upstream_seen.append(request.raw_path)

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


def deep_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value


@pytest.fixture
def config_patch() -> dict[str, Any]:
    """Per-test changes merged into the config (``oauth_helpers.with_config`` sets it)."""
    return {}


@pytest.fixture
def config(upstream_url: str, tmp_path: Path, config_patch: dict[str, Any]) -> dict[str, Any]:
    """The raw config; a test may change it before asking for ``gw``."""
    raw = base_config(upstream_url, tmp_path / "gateway.db")
    deep_merge(raw, config_patch)
    return raw


class GatewayTestServer(TestServer):
    """pytest-aiohttp's server with the runner ``gateway serve`` uses."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def gw(
    config: dict[str, Any], tmp_path: Path, aiohttp_client: AiohttpClient
) -> AsyncIterator[Gateway]:
    settings = settings_from_dict(config, base_dir=tmp_path)
    app = create_app(settings)
    client = await aiohttp_client(GatewayTestServer(app))
    admin = await aiohttp_client(create_admin_app(AppStatus(app)))
    yield Gateway(client, app, settings, settings.sqlite_path, admin)


class Spawned(Protocol):
    def kill(self) -> None:
        """Stop it and everything below it, whatever state it is in."""


@pytest.fixture
def spawned() -> Iterator[list[Spawned]]:
    """Processes (``nodes.Node``) a test starts for itself; all stopped at teardown,
    even on failure."""
    nodes: list[Spawned] = []
    yield nodes
    for node in reversed(nodes):
        node.kill()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (``browser_helpers``), for the page tests."""
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: install Debian's chromium"
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()
