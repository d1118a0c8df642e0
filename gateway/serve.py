"""Run the gateway in the foreground until SIGTERM or SIGINT.

With ``--workers N`` (N > 1) a supervisor process applies migrations once, then
starts N worker processes, each with its own event loop, all accepting on the
same public port (SO_REUSEPORT: the kernel spreads connections). Worker k
serves its admin endpoints on ``admin.port + k`` so each one's metrics can be
scraped. The supervisor forwards SIGTERM/SIGINT to every worker, waits for
their clean shutdown (usage flushed), and stops them all if one dies.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import secrets
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from gateway import logs
from gateway.app import create_admin_app, create_app
from gateway.config import Settings
from gateway.http.server import GatewayRunner
from gateway.store import open_store

log = logging.getLogger("gateway")
SHUTDOWN_GRACE = 10.0
SUPERVISOR_GRACE = SHUTDOWN_GRACE + 5.0


def raise_file_limit() -> None:
    """Every connection is a file descriptor: take the hard limit, not the soft one
    (often 1,024), so that ``proxy.max_connections`` is what bounds them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: Settings, worker: int = 0, reuse_port: bool = False) -> None:
    raise_file_limit()
    public = create_app(settings)
    admin = create_admin_app(public)
    runners = [
        GatewayRunner(
            public, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        ),
        GatewayRunner(admin, access_log=None, handle_signals=False, shutdown_timeout=1.0),
    ]
    admin_port = settings.admin.port + worker if settings.admin.port else 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runners[0].setup()  # runs cleanup_ctx: store, caches, upstream pool
        await runners[1].setup()
        await web.TCPSite(
            runners[0], settings.listen.host, settings.listen.port, reuse_port=reuse_port
        ).start()
        await web.TCPSite(runners[1], settings.admin.host, admin_port).start()
        log.info(
            "gateway worker %d (pid %d) listening on http://%s:%d (admin on http://%s:%d)",
            worker,
            os.getpid(),
            settings.listen.host,
            settings.listen.port,
            settings.admin.host,
            admin_port,
        )
        await stop.wait()
        log.info("stopping: finishing in-flight requests and flushing usage")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on POSIX
        asyncio.run(main)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)


async def migrate(settings: Settings) -> None:
    store = open_store(settings)
    await store.connect()
    try:
        await store.migrate()
    finally:
        await store.close()


def worker_main(settings: Settings, index: int) -> None:
    logs.configure(settings.logging.level)
    run_loop(serve(settings, worker=index, reuse_port=True))


def run(settings: Settings, workers: int = 1) -> None:
    logs.configure(settings.logging.level)
    if workers <= 1:
        run_loop(serve(settings))
        return
    supervise(settings, workers)


def supervise(settings: Settings, workers: int) -> None:
    run_loop(migrate(settings))  # once, before any worker opens the database
    if settings.session.secret is None:
        # Workers must agree on the session key, or a login would hold on one worker only.
        session = settings.session.model_copy(update={"secret": secrets.token_urlsafe(32)})
        settings = settings.model_copy(update={"session": session})
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=worker_main, args=(settings, i), name=f"gateway-worker-{i}")
        for i in range(workers)
    ]
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.start()
    log.info("supervising %d workers", workers)
    failed = False
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(timeout=0.2)
            if not stopping and child.exitcode is not None:
                log.error(
                    "worker %s exited with %s; stopping the others", child.name, child.exitcode
                )
                failed = True
                forward(signal.SIGTERM, None)
    for child in children:
        child.join(timeout=SUPERVISOR_GRACE)
        if child.is_alive():
            child.kill()
            failed = True
    if failed or any(child.exitcode for child in children):
        sys.exit(1)
