"""App factories: wiring only. Every resource is created in ``cleanup_ctx``;
nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config import Settings
from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.middleware import observe, render
from gateway.pipeline import Pipeline
from gateway.pipeline.authn import Authenticator, CredentialCache, RevocationWatcher
from gateway.pipeline.headers import ForwardedFor
from gateway.pipeline.proxy import Forwarder
from gateway.pipeline.routes import RouteTable
from gateway.store import Store, StoreUnavailable, open_store
from gateway.usage import LastUsed

SETTINGS: Final = web.AppKey("settings", Settings)
METRICS: Final = web.AppKey("metrics", Metrics)
STORE: Final = web.AppKey("store", Store)
PIPELINE: Final = web.AppKey("pipeline", Pipeline)
CACHE: Final = web.AppKey("credential_cache", CredentialCache)
PUBLIC_APP: Final = web.AppKey("public_app", web.Application)

UPSTREAM_CONNECTIONS = 256


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.create_task(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    store = open_store(settings)
    await store.connect()
    try:
        await store.migrate()
        cache = CredentialCache(settings.cache.credential_ttl, settings.cache.max_entries)
        watcher = RevocationWatcher(store, cache, settings.cache.poll_interval)
        await watcher.start()
        forwarder = Forwarder(
            settings.upstreams, metrics, settings.proxy.max_body_size, UPSTREAM_CONNECTIONS
        )
        await forwarder.start()
        last_used = LastUsed(store)
        app[STORE] = store
        app[CACHE] = cache
        app[PIPELINE] = Pipeline(
            RouteTable(settings.routes),
            Authenticator(store, cache),
            forwarder,
            ForwardedFor(settings.proxy.trusted_proxies),
            last_used,
        )
        metrics.credential_cache.set_function(lambda: len(cache))
        try:
            async with (
                background(watcher.run()),
                background(last_used.run(settings.usage.flush_interval)),
            ):
                yield
        finally:
            await forwarder.close()
            await last_used.flush()
    finally:
        await store.close()


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PIPELINE].handle(request)


def create_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """The public listener: the proxied routes (and, later, OAuth and management)."""
    metrics = metrics or Metrics()
    app = web.Application(middlewares=[observe(metrics)], handler_args={"max_field_size": 16384})
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(resources)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    public = request.app[PUBLIC_APP]
    try:
        await public[STORE].ping()
    except (KeyError, StoreUnavailable):
        return render(ServiceUnavailable("The database is not reachable."), "-")
    return web.json_response({"status": "ready"})


async def metrics_view(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_admin_app(public: web.Application) -> web.Application:
    """The admin listener: /metrics, /healthz, /readyz; never on the public port."""
    admin = web.Application()
    admin[PUBLIC_APP] = public
    admin[METRICS] = public[METRICS]
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics_view)
    return admin
