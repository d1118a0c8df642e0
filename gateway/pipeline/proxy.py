"""Forwarding: stream a request to its upstream and the answer back.

Bodies are streamed both ways in chunks, never held whole. One pooled
keep-alive ClientSession serves every upstream; it keeps no cookies (one user's
cookies must never reach another's request) and decompresses nothing (bytes pass
through as the upstream sent them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.config import Upstream
from gateway.errors import BadRequest, PayloadTooLarge, UpstreamError, UpstreamTimeout
from gateway.exchange import EXCHANGE
from gateway.metrics import Metrics
from gateway.pipeline.headers import downstream_response_headers, upstream_request_headers
from gateway.pipeline.paths import NormalPath
from gateway.pipeline.routes import CompiledRoute

log = logging.getLogger("gateway.proxy")
CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size (with a Content-Length) are relayed whole


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    origin: str  # scheme://host:port
    base_path: str
    timeout: aiohttp.ClientTimeout

    @classmethod
    def of(cls, name: str, upstream: Upstream) -> Target:
        url = URL(str(upstream.url))
        return cls(
            name=name,
            origin=str(url.origin()),
            base_path=url.raw_path.rstrip("/"),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.timeout
            ),
        )

    def url_for(self, route: CompiledRoute, path: NormalPath) -> str:
        """The upstream URL: origin, base path, the matched path minus strip_prefix, query."""
        forwarded = path.forward_path(route.strip_segments, self.base_path)
        query = f"?{path.query}" if path.query else ""
        return f"{self.origin}{forwarded}{query}"


class BodyTooLarge(Exception):
    pass


async def limited(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream.iter_chunked(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


class Forwarder:
    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        metrics: Metrics,
        max_body_size: int | None,
        max_connections: int,
    ) -> None:
        self.metrics = metrics
        self.default_max_body = max_body_size
        self.max_connections = max_connections
        self.targets = {name: Target.of(name, u) for name, u in upstreams.items()}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=self.max_connections, ttl_dns_cache=60
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, request: web.Request, route: CompiledRoute) -> object:
        if not request.body_exists:
            return None
        limit = route.max_body_size if route.max_body_size is not None else self.default_max_body
        if limit is None:
            return request.content
        if request.content_length is not None:
            if request.content_length > limit:
                raise PayloadTooLarge()
            return request.content
        return limited(request.content, limit)

    async def forward(
        self,
        request: web.Request,
        route: CompiledRoute,
        path: NormalPath,
        injected: Iterable[tuple[str, str]],
    ) -> web.StreamResponse:
        assert self._session is not None, "Forwarder.start() was not awaited"
        target = self.targets[route.upstream]
        url = URL(target.url_for(route, path), encoded=True)
        headers = upstream_request_headers(request.headers, injected)
        data = self._body(request, route)
        started = time.perf_counter()
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=target.timeout,
                compress=None,
            )
        except BodyTooLarge:
            raise PayloadTooLarge() from None
        except (ValueError, UnicodeError):
            # aiohttp refuses header values it cannot put on the wire.
            raise BadRequest("A request header cannot be forwarded.") from None
        except TimeoutError:
            raise self._failed(target, UpstreamTimeout, "timeout") from None
        except aiohttp.ClientConnectorError:
            raise self._failed(target, UpstreamError, "connect") from None
        except aiohttp.ClientError:
            raise self._failed(target, UpstreamError, "protocol") from None
        answered = time.perf_counter()
        self.metrics.upstream_latency.labels(target.name).observe(answered - started)
        request[EXCHANGE].upstream_seconds = answered - started
        async with upstream:
            return await self._relay(request, target, upstream)

    def _failed(self, target: Target, kind: type[UpstreamError], why: str) -> UpstreamError:
        self.metrics.upstream_errors.labels(target.name, why).inc()
        return kind(target.name, why)

    async def _relay(
        self, request: web.Request, target: Target, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY and request.method != "HEAD":
            return await self._relay_small(request, target, upstream)
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=downstream_response_headers(upstream.headers),
        )
        response.headers["X-Request-Id"] = request[EXCHANGE].request_id
        try:
            # Read the first chunk before committing to a status, so an upstream that
            # fails straight after its headers can still be answered with a 502.
            first = await upstream.content.readany()
        except TimeoutError:
            raise self._failed(target, UpstreamTimeout, "timeout") from None
        except aiohttp.ClientError:
            raise self._failed(target, UpstreamError, "protocol") from None
        await response.prepare(request)
        request[EXCHANGE].prepared_at = time.perf_counter()
        try:
            chunk = first
            while chunk:
                await response.write(chunk)
                chunk = await upstream.content.readany()
            await response.write_eof()
        except (TimeoutError, aiohttp.ClientError):
            # Headers are sent; the only honest signal left is a cut connection.
            self._failed(target, UpstreamError, "truncated")
            upstream.close()
            abort(request)
        except ConnectionError:
            # The client went away; stop reading from the upstream.
            upstream.close()
            abort(request)
        return response

    async def _relay_small(
        self, request: web.Request, target: Target, upstream: aiohttp.ClientResponse
    ) -> web.Response:
        """A body known to be small is read whole and sent with the headers in one
        write: fewer system calls than streaming it (the profile's largest cost)."""
        try:
            body = await upstream.read()
        except TimeoutError:
            raise self._failed(target, UpstreamTimeout, "timeout") from None
        except aiohttp.ClientError:
            raise self._failed(target, UpstreamError, "protocol") from None
        headers = downstream_response_headers(upstream.headers)
        headers["X-Request-Id"] = request[EXCHANGE].request_id
        request[EXCHANGE].prepared_at = time.perf_counter()
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers,
                            body=body)  # fmt: skip


def abort(request: web.Request) -> None:
    request[EXCHANGE].aborted = True
    if request.transport is not None:
        request.transport.close()
