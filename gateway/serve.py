"""Run the gateway in the foreground until SIGTERM or SIGINT: a supervisor and its
workers (``gateway.node.supervisor``). This module is what runs in a worker."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Lock
from typing import Any

from aiohttp import web

from gateway import logs
from gateway.app import METRICS, AppStatus, create_app, reload_app
from gateway.config import Settings
from gateway.http.server import GatewayRunner
from gateway.node.control import LISTENING, WorkerSide
from gateway.node.segment import segment_path
from gateway.node.shared import NodeMemory
from gateway.node.supervisor import SHUTDOWN_GRACE, Supervisor

log = logging.getLogger("gateway")
PARENT_CHECK = 0.5  # seconds between checks that the supervisor is still there


def raise_file_limit() -> None:
    """Every connection is a file descriptor: take the hard limit, not the soft one
    (often 1,024), so that ``proxy.max_connections`` is what bounds them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings, workers: int) -> None:
    logs.configure(settings.logging.level)
    status = run_loop(Supervisor(settings, workers, worker_main).run())
    if status:
        sys.exit(status)


def run_loop(main: Coroutine[Any, Any, int | None]) -> int | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on POSIX
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def worker_main(settings: Settings, index: int, conn: Connection, locks: list[Lock]) -> None:
    """A worker process: started by the supervisor, with one end of its pipe and the
    locks of the node's counters."""
    logs.configure(settings.logging.level)
    run_loop(serve(settings, index, conn, locks))


async def serve(settings: Settings, index: int, conn: Connection, locks: list[Lock]) -> None:
    raise_file_limit()
    memory = NodeMemory.attach(segment_path(settings), settings.limits.node_counters, locks)
    public = create_app(settings, memory=memory, worker=index)
    runner = GatewayRunner(
        public, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    status = AppStatus(public)

    async def snapshot(_: None) -> Any:
        return public[METRICS].snapshot()

    async def unready(_: None) -> str | None:
        return await status.unready()

    async def reload(new: Settings) -> str | None:
        try:
            await reload_app(public, new)
        except Exception as exc:  # reported to the supervisor, which refuses the reload
            log.exception("reload failed in worker %d", index)
            return f"worker {index}: {type(exc).__name__}: {exc}"
        return None

    supervisor = WorkerSide(conn, {"metrics": snapshot, "unready": unready, "reload": reload})
    watch = loop.create_task(watch_parent(os.getppid(), stop))
    try:
        await runner.setup()  # runs cleanup_ctx: store, caches, upstream pool
        listen = settings.listen
        try:
            await web.TCPSite(runner, listen.host, listen.port, reuse_port=True).start()
        except OSError as exc:  # the supervisor stops the node: a start-up failure
            log.error("cannot listen on %s:%d: %s", listen.host, listen.port, exc.strerror or exc)
            return
        supervisor.send(LISTENING)
        log.info("worker %d (pid %d) listening on http://%s:%d",
                 index, os.getpid(), listen.host, listen.port)  # fmt: skip
        await stop.wait()
    finally:
        watch.cancel()
        await runner.cleanup()
        supervisor.close()
        memory.close()


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop, as on SIGTERM, once the supervisor is gone (killed, not stopped)."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK)
    log.error("the supervisor is gone; stopping")
    stop.set()
