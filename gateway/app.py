"""App factories: wiring only. Every resource is created in ``cleanup_ctx``;
nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from gateway import crypto
from gateway.config import Settings, case_insensitive, config_hash
from gateway.events.delivery import Deliverer
from gateway.events.scanner import Scanner
from gateway.events.signals import Signals
from gateway.http.engine import ENGINE, Engine
from gateway.http.server import claimed_segments
from gateway.logs import AccessLog
from gateway.manage import MANAGEMENT, add_management_routes, management_api
from gateway.manage.auth import ManagementAuth
from gateway.metering.counters import Counters, RedisCounters
from gateway.metering.limits import Limiter
from gateway.metering.usage import UsageBook
from gateway.metering.wallet import Wallet
from gateway.metrics import Metrics
from gateway.node.admin import Reload
from gateway.node.segment import debit_holder, node_name
from gateway.node.shared import NodeMemory
from gateway.oauth.jwt_tokens import JWT_PREFIX, JwtCodec, load_keys
from gateway.oauth.token_service import TokenService
from gateway.pipeline import Pipeline
from gateway.pipeline.assertion import Assertions
from gateway.pipeline.authn import Authenticator, CredentialCache, RevocationWatcher
from gateway.pipeline.decision import Decisions
from gateway.pipeline.headers import ForwardedFor
from gateway.pipeline.proxy import Forwarder
from gateway.pipeline.routes import RouteTable
from gateway.pipeline.sockets import SocketGuard
from gateway.store import Store, StoreUnavailable, open_store
from gateway.tracing import Spans
from gateway.web.dashboard import DASHBOARD, Dashboard, add_dashboard_routes
from gateway.web.middleware import observe, server_named
from gateway.web.oauth_routes import OAUTH, SIGNER, add_oauth_routes, oauth_server
from gateway.web.pages import setup_templates
from gateway.web.session import Sessions

SETTINGS: Final = web.AppKey("settings", Settings)
METRICS: Final = web.AppKey("metrics", Metrics)
STORE: Final = web.AppKey("store", Store)
PIPELINE: Final = web.AppKey("pipeline", Pipeline)
CACHE: Final = web.AppKey("credential_cache", CredentialCache)
USAGE: Final = web.AppKey("usage", UsageBook)
TOKENS: Final = web.AppKey("tokens", TokenService)
ACCESS_LOG: Final = web.AppKey("access_log", AccessLog)
WATCHER: Final = web.AppKey("revocation_watcher", RevocationWatcher)
NODE_MEMORY: Final = web.AppKey("node_memory", NodeMemory)  # the supervisor's; else private
WORKER: Final = web.AppKey("worker", int)  # this worker's number in its node


@dataclass
class Current:
    """The settings now: those the app started with, until a reload."""

    settings: Settings


CURRENT: Final = web.AppKey("current_settings", Current)
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

UPSTREAM_CONNECTIONS = 256
BODY_LIMIT = 64 * 1024  # for the gateway's own endpoints; proxied bodies are streamed


def configured_host(settings: Settings) -> str | None:
    """``public_url``'s host (and port), when the config or environment sets one."""
    if "public_url" not in settings.model_fields_set:
        return None
    return URL(str(settings.public_url)).host_port_subcomponent or None


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


SPANS_CLOSE: Final = 3.0  # seconds to export the last spans at shutdown


def make_forwarder(settings: Settings, metrics: Metrics) -> Forwarder:
    asserting = settings.identity_assertion
    return Forwarder(
        settings.upstreams,
        metrics,
        settings.proxy.max_body_size,
        UPSTREAM_CONNECTIONS,
        session_cookie=settings.session.cookie_name,
        also_stripped=frozenset({asserting.header} if asserting.enabled else ()),
    )


def make_assertions(settings: Settings, signer: JwtCodec | None) -> Assertions | None:
    asserting = settings.identity_assertion
    if not asserting.enabled or signer is None:
        return None
    return Assertions(signer.sign, asserting.header, asserting.ttl)


def make_decisions(settings: Settings, forwarded_for: ForwardedFor) -> Decisions | None:
    if not settings.decision.enabled:
        return None
    return Decisions(settings.decision.path, forwarded_for)


async def reload_app(app: web.Application, settings: Settings) -> None:
    """Switch a running app to new settings (``gateway.node.supervisor`` checked that
    only what can change live has changed): routes, scopes, upstreams, limits, CORS,
    the decision endpoint, identity assertions, proxy settings. In one step of the
    event loop, so a request sees the old settings or the new ones, never a mix;
    requests in flight finish on the old upstream connections, which are closed as
    they come back."""
    pipeline, engine = app[PIPELINE], app[ENGINE]
    forwarder = make_forwarder(settings, app[METRICS])
    await forwarder.start()
    old = pipeline.forwarder
    pipeline.forwarded_for.configure(settings.proxy.trusted_proxies, configured_host(settings))
    pipeline.limiter.configure(settings.limits)
    pipeline.routes = RouteTable(settings.routes, case_insensitive(settings))
    pipeline.forwarder = forwarder
    pipeline.assertions = make_assertions(settings, app.get(SIGNER))
    engine.decisions = make_decisions(settings, pipeline.forwarded_for)
    engine.header_timeout = settings.proxy.header_timeout
    engine.max_connections = settings.proxy.max_connections
    engine.websocket_idle_timeout = settings.proxy.websocket_idle_timeout
    oauth, management = app[OAUTH], app[MANAGEMENT]
    for holder in (oauth.authorize, oauth.authorize.flow, management.keys, management.apps,
                   management.usage, app[DASHBOARD], app[CURRENT]):  # fmt: skip
        holder.settings = settings  # the scope catalog, the metadata, the OpenAPI document
    await old.close()


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    usage = app[USAGE]
    store = open_store(settings)
    memory = app.get(NODE_MEMORY) or NodeMemory.private(settings.limits.node_counters)
    cache = CredentialCache(
        settings.cache.credential_ttl, settings.cache.max_entries, memory.revocations
    )
    signer = JwtCodec(settings, load_keys(settings)) if settings.tokens.signing_keys else None
    codec = signer if settings.tokens.format == "jwt" else None
    tokens = TokenService(store, settings.oauth, codec)
    app[TOKENS] = tokens
    if signer is not None:
        app[SIGNER] = signer
    authenticator = Authenticator(
        store, cache, access_token_header=settings.oauth.access_token_header
    )
    authenticator.register(crypto.ACCESS_TOKEN_PREFIX, tokens.principal)
    if codec is not None:
        authenticator.register(JWT_PREFIX, tokens.principal, codec.valid)
    forwarder = make_forwarder(settings, metrics)
    app[WATCHER] = watcher = RevocationWatcher(
        store, memory.revocations, settings.cache.poll_interval
    )
    sessions = Sessions(settings, store)
    counters: Counters = (
        RedisCounters(settings.redis.url, settings.redis.timeout)
        if settings.redis.url
        else memory.counters
    )
    limiter = Limiter(
        settings.limits,
        counters,
        fail_open=settings.redis.on_failure == "open",
        on_failure=lambda outcome: metrics.limit_backend_failures.inc(outcome),
    )
    forwarded_for = ForwardedFor(settings.proxy.trusted_proxies, configured_host(settings))
    app[STORE] = store
    app[CACHE] = cache
    app[OAUTH] = oauth_server(settings, store, tokens, sessions, forwarded_for, counters)
    app[PIPELINE] = Pipeline(
        RouteTable(settings.routes, case_insensitive(settings)),
        authenticator,
        forwarder,
        forwarded_for,
        limiter,
        usage,
        Wallet(store, debit_holder(node_name(settings), app[WORKER], os.getpid())),
        make_assertions(settings, signer),
    )
    own = [resource.canonical for resource in app.router.resources()]
    sockets = SocketGuard(memory.revocations)
    spans = Spans(settings.tracing) if settings.tracing.otlp_endpoint else None
    app[ENGINE] = Engine(app[PIPELINE], metrics, usage, app[ACCESS_LOG], claimed_segments(own),
                         settings.proxy.header_timeout, settings.proxy.max_connections,
                         make_decisions(settings, forwarded_for), sockets,
                         settings.proxy.websocket_idle_timeout, settings.server_header,
                         spans)  # fmt: skip
    manage_auth = ManagementAuth(store, authenticator, limiter, sessions, forwarded_for)
    app[MANAGEMENT] = management_api(store, settings, manage_auth, usage)
    app[DASHBOARD] = Dashboard(store, settings, sessions, app[MANAGEMENT], usage)
    metrics.cache_size = lambda: len(cache)
    events = settings.events
    signals = Signals(events.auth_failures_spike)
    usage.watch = signals.watch
    scanner = Scanner(store, events.expiry_scan_interval, settings.usage.flush_interval)
    # Only now the things that hold connections, each undone if a later one fails.
    await store.connect()
    try:
        await store.migrate()
        await watcher.start()
        await forwarder.start()
        try:
            async with (
                background(watcher.run(cache)),
                background(usage.run(store, settings.usage.flush_interval)),
                background(app[ACCESS_LOG].run()),
                background(signals.run(store, settings.usage.flush_interval)),
                background(scanner.run()),
                background(Deliverer(store, events).run()),
            ):
                yield
        finally:
            if spans is not None:  # what is left, exported off the event loop, bounded
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.to_thread(spans.close), SPANS_CLOSE)
            await sockets.close()
            await forwarder.close()
            await usage.flush(store)
            await signals.flush(store)
            await counters.close()
    finally:
        await store.close()
        if NODE_MEMORY not in app:
            memory.close()  # its own, private one


@web.middleware
async def publish_changes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A call that may have revoked or changed credentials answers only once the node
    has been told: then no worker accepts what it revoked, not even on its next
    request (``RevocationWatcher``)."""
    try:
        return await handler(request)
    finally:
        if request.method not in SAFE_METHODS:
            with contextlib.suppress(StoreUnavailable):  # the watcher clears the cache
                await request.app[WATCHER].publish_changes()


def create_app(
    settings: Settings,
    metrics: Metrics | None = None,
    memory: NodeMemory | None = None,
    worker: int = 0,
) -> web.Application:
    """The gateway's own endpoints on the public listener (OAuth, management API,
    dashboard); the proxy engine serves every other path (``engine``). ``memory``:
    the node's, in worker number ``worker``; an app of its own has a private one."""
    metrics = metrics or Metrics()
    usage = UsageBook()
    access_log = AccessLog(settings.logging.access_log)
    app = web.Application(
        middlewares=[observe(metrics, usage, access_log), publish_changes],
        handler_args={"max_field_size": 16384},
        client_max_size=BODY_LIMIT,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[USAGE] = usage
    app[ACCESS_LOG] = access_log
    app[WORKER] = worker
    app[CURRENT] = Current(settings)
    if memory is not None:
        app[NODE_MEMORY] = memory
    app.cleanup_ctx.append(resources)
    app.on_response_prepare.append(server_named(settings.server_header))
    setup_templates(app)
    add_oauth_routes(app, settings, lambda: app[CURRENT].settings)
    add_management_routes(app, settings, lambda: app[CURRENT].settings)
    add_dashboard_routes(app, settings)
    return app


class AppStatus:
    """The admin listener's view of an app served on its own (``NodeStatus``)."""

    def __init__(self, public: web.Application) -> None:
        self.public = public

    async def metrics(self) -> Metrics:
        return self.public[METRICS]

    async def unready(self) -> str | None:
        try:
            await self.public[STORE].ping()
        except (KeyError, StoreUnavailable):
            return "The database is not reachable."
        return None

    def workers(self) -> tuple[int, int]:
        return 1, 1

    def config(self) -> str | None:
        return config_hash(self.public[CURRENT].settings)

    async def reload(self) -> Reload:
        """An app served on its own (tests) has no config file to read again."""
        return Reload("refused", self.config(), ("this app is not served by a node",))
