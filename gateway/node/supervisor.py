"""The node's supervisor: it serves no traffic. It applies migrations, creates the
shared memory, starts the workers (each its own process and event loop, all
accepting on the public port with SO_REUSEPORT), serves the one admin listener,
and replaces a worker that dies.

- A worker that exits while the node is not stopping is replaced at once (after
  a second if it lived less than a second, so that a crash at start cannot spin).
  What it had counted stays in the node's metrics; debits it had taken for calls
  not yet settled are refunded (``Store.wallet_release``).
- A worker that exits before it ever listened (its port taken, a bad plugin)
  stops the node with exit status 1: that is a start-up failure, not a crash.
- SIGTERM or SIGINT: every worker is told to stop (SIGTERM), finishes its
  in-flight requests and flushes its usage; the supervisor exits 0 once all have
  exited cleanly.
- Should the supervisor itself be killed, each worker notices its parent gone
  within half a second and stops as on SIGTERM.
- SIGHUP, or ``POST /reload`` on the admin listener (``gateway reload``), reads
  the config file again. An invalid file, or one that changes a setting that
  cannot change live (see ``gateway.config.RELOADABLE``), is refused and the old
  config keeps serving; otherwise every worker switches to it, and so does every
  worker started later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Lock
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import ConfigError, Settings, config_hash, fixed_changes, load_config
from gateway.metrics import Metrics, Snapshot
from gateway.node.admin import Reload, create_admin_app
from gateway.node.control import SupervisorSide
from gateway.node.segment import debit_holder, node_name, segment_path
from gateway.node.shared import NodeMemory, region_locks
from gateway.store import Store, StoreUnavailable, open_store

log = logging.getLogger("gateway")
SHUTDOWN_GRACE = 10.0  # seconds a worker has to finish its requests
SUPERVISOR_GRACE = SHUTDOWN_GRACE + 5.0
QUICK_DEATH = 1.0  # a worker that lived less than this is restarted after a pause


class Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, index: int, process: SpawnProcess, channel: SupervisorSide) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.started = time.monotonic()
        self.listening = False
        self.last: Snapshot | None = None  # its metrics when last asked

    def holder(self, node: str) -> str:
        """How its debits name it (``Wallet``)."""
        return debit_holder(node, self.index, self.process.pid or 0)


WorkerMain = Callable[[Settings, int, Connection, list[Lock]], None]


class Supervisor:
    """``worker_main`` is what runs in each worker process (``gateway.serve``): the
    settings, its number, its end of the pipe and the counters' locks."""

    def __init__(self, settings: Settings, workers: int, worker_main: WorkerMain) -> None:
        loaded = settings
        if settings.session.secret is None:
            # Workers must agree on the session key, or a login would hold on one only.
            session = settings.session.model_copy(update={"secret": secrets.token_urlsafe(32)})
            settings = settings.model_copy(update={"session": session})
        self.loaded = loaded  # as read from the file (the session secret as the file has it)
        self.settings = settings
        self.configured = workers
        self.worker_main = worker_main
        self.reloading = asyncio.Lock()
        self.node = node_name(settings)
        self.context = multiprocessing.get_context("spawn")
        self.running: dict[int, Worker] = {}
        self.retired = Metrics()  # what workers that are gone had counted, and the reloads
        self.stopping = asyncio.Event()
        self.failed = False
        self.all_listening = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.locks = region_locks()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        store = open_store(self.settings)
        await store.connect()
        memory: NodeMemory | None = None
        admin = web.AppRunner(
            create_admin_app(self, self.settings.server_header),
            access_log=None,
            handle_signals=False,
        )
        try:
            await store.migrate()  # once, before any worker opens the database
            await self._release(store, self.node + "/")  # a previous life's debits
            memory = NodeMemory.create(
                segment_path(self.settings), self.settings.limits.node_counters, self.locks
            )
            for index in range(self.configured):
                self._start(index, store)
            if await self._first(self.all_listening.wait()):
                await admin.setup()
                admin_listener = self.settings.admin
                await web.TCPSite(admin, admin_listener.host, admin_listener.port).start()
                log.info("node of %d workers on http://%s:%d (admin on http://%s:%d)",
                         self.configured, self.settings.listen.host, self.settings.listen.port,
                         admin_listener.host, admin_listener.port)  # fmt: skip
                await self.stopping.wait()
            log.info("stopping: workers finish their in-flight requests and flush usage")
        finally:
            self.stopping.set()
            await self._stop_workers()
            await admin.cleanup()
            for task in self.tasks:
                task.cancel()
            if memory is not None:
                memory.segment.unlink()
                memory.close()
            await store.close()
        return 1 if self.failed else 0

    async def _first(self, wait: Any) -> bool:
        """Wait for ``wait`` unless the node stops first; True if it came."""
        waited = asyncio.ensure_future(wait)
        stopped = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({waited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        waited.cancel()
        stopped.cancel()
        return not self.stopping.is_set()

    # --- workers ---

    def _start(self, index: int, store: Store) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=self.worker_main,
            args=(self.settings, index, theirs, self.locks),
            name=f"gateway-worker-{index}",
        )
        process.start()
        theirs.close()
        worker = Worker(index, process, SupervisorSide(ours, lambda: self._listening(worker)))
        self.running[index] = worker
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, worker, store)

    def _listening(self, worker: Worker) -> None:
        worker.listening = True
        if all(w.listening for w in self.running.values()) and len(self.running) == self.configured:
            self.all_listening.set()

    def _exited(self, worker: Worker, store: Store) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        worker.process.join()
        worker.channel.close()
        if self.running.get(worker.index) is worker:
            del self.running[worker.index]
        if worker.last is not None:
            self.retired.absorb(worker.last.without_gauges())
        self._spawn(self._release(store, worker.holder(self.node)))
        if self.stopping.is_set():
            if worker.process.exitcode != 0:
                self.failed = True
            return
        if not worker.listening:
            log.error("worker %d could not start (exit status %s); stopping the node",
                      worker.index, worker.process.exitcode)  # fmt: skip
            self.failed = True
            self.stopping.set()
            return
        log.error("worker %d (pid %s) exited with status %s; starting another",
                  worker.index, worker.process.pid, worker.process.exitcode)  # fmt: skip
        pause = max(0.0, QUICK_DEATH - (time.monotonic() - worker.started))
        loop.call_later(pause, self._restart, worker.index, store)

    def _restart(self, index: int, store: Store) -> None:
        if not self.stopping.is_set() and index not in self.running:
            self._start(index, store)

    async def _release(self, store: Store, holder: str) -> None:
        try:
            refunded = await store.wallet_release(holder, time.time())
        except StoreUnavailable:
            log.error("could not refund the open debits of %s: the database is unreachable",
                      holder)  # fmt: skip
            return
        if refunded:
            log.warning("refunded %d debits of calls a stopped worker left unsettled", refunded)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _stop_workers(self) -> None:
        for worker in list(self.running.values()):
            if worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + SUPERVISOR_GRACE
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # ``_exited`` removes each one as it ends
        for worker in list(self.running.values()):
            log.error("worker %d did not stop in time; killing it", worker.index)
            worker.process.kill()
            worker.process.join()
            self.failed = True
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the admin listener's view (``NodeStatus``) ---

    def workers_up(self) -> list[Worker]:
        return [w for w in self.running.values() if w.listening and w.process.is_alive()]

    def workers(self) -> tuple[int, int]:
        return len(self.workers_up()), self.configured

    def config(self) -> str | None:
        return config_hash(self.loaded)

    async def reload(self) -> Reload:
        async with self.reloading:  # one at a time, in the order asked
            done = await self._reload()
        self.retired.config_reloads.inc(done.outcome)
        if done.errors:
            log.error("config reload %s: %s", done.outcome, "; ".join(done.errors))
        else:
            log.info("config reloaded: %s", done.config)
        return done

    async def _reload(self) -> Reload:
        try:
            new = load_config(Path(self.settings.source))
        except ConfigError as exc:
            return Reload("invalid", self.config(), tuple(exc.problems))
        fixed = fixed_changes(self.loaded, new)
        if fixed:
            refusals = tuple(f"{name}: cannot change while the node runs (restart it)"
                             for name in fixed)  # fmt: skip
            return Reload("refused", self.config(), refusals)
        settings = new.model_copy(update={"session": self.settings.session})
        failed: list[str] = []
        for worker in self.workers_up():
            try:
                answer: str | None = await worker.channel.ask("reload", settings)
            except (TimeoutError, ConnectionError):
                answer = f"worker {worker.index} did not answer"
            if answer is not None:
                failed.append(answer)
        # Workers that switched stay switched; later ones start with the new settings.
        self.loaded, self.settings = new, settings
        if failed:
            return Reload("failed", self.config(), tuple(failed))
        return Reload("applied", self.config())

    async def metrics(self) -> Metrics:
        total = Metrics()
        total.config_hash = self.config()
        total.absorb(self.retired.snapshot())
        for worker in self.workers_up():
            with contextlib.suppress(TimeoutError, ConnectionError):
                worker.last = await worker.channel.ask("metrics")
            if worker.last is not None:
                total.absorb(worker.last)
        return total

    async def unready(self) -> str | None:
        up = self.workers_up()
        if len(up) < self.configured:
            return f"{len(up)} of {self.configured} workers are up."
        for worker in up:
            try:
                why: str | None = await worker.channel.ask("unready")
            except (TimeoutError, ConnectionError):
                why = f"Worker {worker.index} does not answer."
            if why is not None:
                return why
        return None
