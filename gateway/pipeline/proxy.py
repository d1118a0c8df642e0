"""Forwarding: a request's upstream, its pool and the head to send it; the call
itself is a ``relay.Relay``.

Bodies are streamed both ways in chunks, never held whole (a small body with
a known length is relayed in one write). Upstream calls go through the lean
keep-alive pool in ``upstream.py``: no cookies are kept (one user's cookies
must never reach another's request) and nothing is decompressed (bytes pass
through as the upstream sent them).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from gateway.config import Upstream
from gateway.errors import (
    EnvironmentUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.exchange import Exchange
from gateway.http.framing import Relayed
from gateway.http.heads import HOP_BY_HOP, Fields, Skip
from gateway.metrics import Metrics
from gateway.pipeline.headers import STRIPPED, Injected
from gateway.pipeline.paths import NormalPath
from gateway.pipeline.pool import UpstreamPool
from gateway.pipeline.relay import Answer, Done, Relay, ignore
from gateway.pipeline.routes import CompiledRoute
from gateway.pipeline.targets import Target, target_key
from gateway.pipeline.upstream import (
    Head,
    UpstreamConnectError,
    UpstreamProtocol,
    UpstreamProtocolError,
    request_head,
)
from gateway.wait import Wait

log = logging.getLogger("gateway.proxy")


@dataclass(frozen=True, slots=True)
class Switched:
    """An upstream's 101 to a WebSocket handshake."""

    conn: UpstreamProtocol  # its transport now carries the socket's frames
    reason: str
    headers: Relayed  # the 101's fields, as the client gets them


class Forwarder:
    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        metrics: Metrics,
        max_body_size: int | None,
        max_connections: int,
        session_cookie: str = "",
        also_stripped: frozenset[str] = frozenset(),
    ) -> None:
        self.metrics = metrics
        # What the upstream never sees of a request's fields; ``also_stripped``: more
        # injected names, from the config (any spelling).
        self.skip = Skip(frozenset(
            name.encode("latin-1") for name in (*HOP_BY_HOP, *STRIPPED, *also_stripped)
        ))  # fmt: skip
        self.cookie = session_cookie.encode("latin-1")
        self.default_max_body = max_body_size
        self.max_connections = max_connections
        self.targets = {name: Target.of(name, u) for name, u in upstreams.items()}
        self.targets |= {
            target_key(name, "test"): Target.of(target_key(name, "test"), u, test=True)
            for name, u in upstreams.items()
            if u.test_url is not None
        }
        self.pools: dict[str, UpstreamPool] = {}

    async def start(self) -> None:
        tls = ssl.create_default_context()
        self.pools = {
            name: UpstreamPool(
                t.host, t.port, self.max_connections, t.connect_timeout, tls if t.tls else None
            )
            for name, t in self.targets.items()
        }

    async def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def target_for(self, route: CompiledRoute, environment: str) -> str:
        """Which target a credential of ``environment`` reaches on ``route``: its
        upstream's ``url`` for live, its ``test_url`` for test; 403 when there is none
        or the route does not serve that environment."""
        key = target_key(route.upstream, environment)
        if environment not in route.environments or (
            key not in self.targets and route.upstream in self.targets
        ):
            raise EnvironmentUnavailable(environment)
        return key

    def body_limit(self, route: CompiledRoute) -> int | None:
        return route.max_body_size if route.max_body_size is not None else self.default_max_body

    def forward(
        self,
        method: str,
        route: CompiledRoute,
        upstream: str,
        path: NormalPath,
        incoming: Fields,
        injected: Injected,
        body: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
        exchange: Exchange,
        answer: Answer,
        done: Done,
    ) -> Relay:
        """Send the request upstream and its answer to ``answer``; ``done`` is told once,
        with None or the GatewayError to answer (502, 504, 413, 499). A body at hand and
        an idle connection need no waiting: the call then runs from the connections'
        callbacks (``Relay.send``); anything else in a task."""
        target, pool, head_bytes = self.prepare(
            method, route, upstream, path, incoming, injected, chunked
        )
        relay = Relay(self, target, pool, method, head_bytes, body, chunked, exchange, answer, done)
        leased: Wait[UpstreamProtocol] | None = None
        if body is None or isinstance(body, bytes):
            conn = pool.acquire(timeout=target.read_timeout)
            if not isinstance(conn, Wait):
                relay.send(conn)
                return relay
            leased = conn
        relay.later(relay.run(leased))
        return relay

    def prepare(
        self,
        method: str,
        route: CompiledRoute,
        upstream: str,
        path: NormalPath,
        incoming: Fields,
        injected: Injected,
        chunked: bool,
    ) -> tuple[Target, UpstreamPool, bytes]:
        """The upstream, its pool and the request head to send it."""
        target, pool = self.targets.get(upstream), self.pools.get(upstream)
        if target is None or pool is None:  # judged before a reload that removed it
            raise UpstreamError(upstream, "reloaded")
        lines = incoming.forwarded(self.skip, self.cookie)
        lines += injected.lines()
        head_bytes = request_head(
            method, target.path_for(route, path), pool.host_header, lines, chunked
        )
        return target, pool, head_bytes

    def answered(self, target: Target, started: float, exchange: Exchange) -> None:
        """The response head arrived: how long the upstream took."""
        exchange.upstream_seconds = time.perf_counter() - started
        self.metrics.observe_upstream(target.name, exchange.upstream_seconds)

    async def upgrade(
        self,
        route: CompiledRoute,
        upstream: str,
        path: NormalPath,
        incoming: Fields,
        injected: Injected,
        exchange: Exchange,
        answer: Answer,
    ) -> Switched | None:
        """A WebSocket handshake (RFC 6455 §4.1), on a connection of its own: never pooled,
        since it becomes the socket. The upstream's 101, with the connection that now
        carries the socket's frames; None when it answered otherwise, as relayed to
        ``answer`` like any answer."""
        asked = Injected(
            injected.prepared,
            [*injected.fields, ("Connection", "Upgrade"), ("Upgrade", "websocket")],
        )
        target, pool, head_bytes = self.prepare(
            "GET", route, upstream, path, incoming, asked, False
        )
        started = time.perf_counter()
        try:
            conn = await pool.connect()
        except UpstreamConnectError:
            raise self.failed(target, UpstreamError, "connect") from None
        try:
            conn.start(head_only=False, upgrading=True)
            conn.write(head_bytes)
            head = await conn.head(target.read_timeout)
            self.answered(target, started, exchange)
            if head.status == 101:
                return self._switched(target, conn, head, exchange)
            await Relay(self, target, pool, "GET", head_bytes, None, False, exchange, answer,
                        ignore).stream(conn, head)  # fmt: skip
        except TimeoutError:
            raise self.failed(target, UpstreamTimeout, "timeout") from None
        except UpstreamProtocolError:
            raise self.failed(target, UpstreamError, "protocol") from None
        finally:
            if conn.upgraded is None:
                conn.close()
        return None

    def _switched(
        self, target: Target, conn: UpstreamProtocol, head: Head, exchange: Exchange
    ) -> Switched:
        """The upstream's 101, checked: it must switch to WebSocket (RFC 6455 §4.2.2)."""
        upgrade = head.fields.get("Upgrade") or ""
        if conn.upgraded is None or upgrade.strip().lower() != "websocket":
            conn.upgraded = None  # closed by the caller
            raise self.failed(target, UpstreamError, "protocol")
        headers = self.answer_headers(head, exchange)
        headers = headers.plus([("Connection", "Upgrade"), ("Upgrade", "websocket")])
        return Switched(conn, head.reason, headers)

    def failed(self, target: Target, kind: type[UpstreamError], why: str) -> UpstreamError:
        self.metrics.upstream_errors.inc(target.name, why)
        return kind(target.name, why)

    def answer_headers(self, head: Head, exchange: Exchange) -> Relayed:
        """The upstream's response fields as the client gets them."""
        return Relayed(head.fields, self.cookie, [("X-Request-Id", exchange.request_id)])
