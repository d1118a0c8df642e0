"""Keep-alive connections to one upstream (``UpstreamPool``), at most a limit at once
(``Slots``), each an ``UpstreamProtocol`` from ``gateway.pipeline.upstream``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl

from gateway.pipeline.upstream import UpstreamConnectError, UpstreamProtocol
from gateway.wait import Wait


class UpstreamPool:
    """Keep-alive connections to one upstream (host, port), at most ``limit`` at once."""

    def __init__(
        self,
        host: str,
        port: int,
        limit: int,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.host_header = host if port in (80, 443) else f"{host}:{port}"
        self.connect_timeout = connect_timeout
        self.idle: collections.deque[UpstreamProtocol] = collections.deque()
        self.slots = Slots(limit)
        self.closed = False  # retired: what is in use is closed when it comes back

    async def connect(self) -> UpstreamProtocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    UpstreamProtocol,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from None
        return protocol

    def acquire(
        self, fresh: bool = False, timeout: float | None = None
    ) -> UpstreamProtocol | Wait[UpstreamProtocol]:
        """An idle kept-alive connection at once, when there is one and a slot is free;
        otherwise a wait for a slot and a connection (TimeoutError if no slot frees up
        within ``timeout``)."""
        if not fresh and self.idle and self.slots.try_take():
            conn = self._pop_idle()
            if conn is not None:
                return conn
            self.slots.give()
        return Wait(self._acquire(fresh, timeout))

    async def _acquire(self, fresh: bool, timeout: float | None) -> UpstreamProtocol:
        await self.slots.take(timeout)
        try:
            conn = None if fresh else self._pop_idle()
            return conn or await self.connect()
        except BaseException:
            self.slots.give()
            raise

    def _pop_idle(self) -> UpstreamProtocol | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                conn.reused = True
                conn.released = False
                return conn
        return None

    def release(self, conn: UpstreamProtocol) -> None:
        """Back to the pool if its response was read to the end and it may be reused."""
        if conn.released:
            return  # each lease is given back once
        conn.released = True
        conn.listener = None
        if conn.reusable and not self.closed:
            self.idle.append(conn)
        else:
            conn.close()
        self.slots.give()

    def discard(self, conn: UpstreamProtocol) -> None:
        conn.keep_alive = False
        self.release(conn)

    def close(self) -> None:
        """Close the idle connections now, and each one in use once it is released (its
        request is not cut)."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()


class Slots:
    """A counting semaphore that can also be taken without waiting (``try_take``), so a
    request can get an idle connection from a protocol callback."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self, timeout: float | None) -> None:
        """A slot; TimeoutError after ``timeout`` seconds without one."""
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Hand the slot to the longest waiter, else put it back."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
