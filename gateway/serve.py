"""Run the public and admin listeners in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gateway import logs
from gateway.app import create_admin_app, create_app
from gateway.config import Settings
from gateway.httpserver import GatewayRunner

log = logging.getLogger("gateway")
SHUTDOWN_GRACE = 10.0


async def serve(settings: Settings) -> None:
    public = create_app(settings)
    admin = create_admin_app(public)
    runners = [
        GatewayRunner(
            public, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        ),
        GatewayRunner(admin, access_log=None, handle_signals=False, shutdown_timeout=1.0),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runners[0].setup()  # runs cleanup_ctx: store, caches, upstream pool
        await runners[1].setup()
        await web.TCPSite(runners[0], settings.listen.host, settings.listen.port).start()
        await web.TCPSite(runners[1], settings.admin.host, settings.admin.port).start()
        log.info(
            "gateway listening on http://%s:%d (admin on http://%s:%d)",
            settings.listen.host,
            settings.listen.port,
            settings.admin.host,
            settings.admin.port,
        )
        await stop.wait()
        log.info("stopping: finishing in-flight requests and flushing usage")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def run(settings: Settings) -> None:
    logs.configure(settings.logging.level, settings.logging.access_log)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on POSIX
        asyncio.run(serve(settings))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings))
