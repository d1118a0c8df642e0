"""The proxy engine: what it is given by the public app.

The engine serves the public listener's connections (``connection``): it frames
requests (``framing``), runs each proxied one as a ``Call`` through the pipeline
(``call``), streams bodies both ways with back-pressure, and lends requests for
the gateway's own endpoints (OAuth, management, dashboard, well-known documents)
to aiohttp's server one at a time (``server``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.logs import AccessLog
from gateway.metering.usage import UsageBook
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.pipeline.decision import Decisions
from gateway.pipeline.paths import NormalPath
from gateway.pipeline.sockets import SocketGuard
from gateway.tracing import Spans


@dataclass(slots=True)
class Engine:
    """What the engine needs from the public app, and which paths are aiohttp's."""

    pipeline: Pipeline
    metrics: Metrics
    usage: UsageBook
    access_log: AccessLog
    claimed: frozenset[str]  # first path segments of the gateway's own endpoints
    header_timeout: float
    max_connections: int
    decisions: Decisions | None  # the decision endpoint, when enabled
    sockets: SocketGuard  # the open WebSockets' credentials
    websocket_idle_timeout: float
    server: str  # the Server field of the gateway's own answers
    spans: Spans | None = None  # proxied requests' spans, when exported over OTLP

    def deciding(self, path: NormalPath | None) -> Decisions | None:
        """The decision endpoint, if the request is for it."""
        found = self.decisions
        return found if found is not None and path is not None and found.claims(path) else None

    def own(self, target: str, path: NormalPath | None) -> bool:
        """Whether the request is for one of the gateway's own endpoints."""
        if path is not None:
            first = path.segments[0] if path.segments else ""
        else:  # a path the pipeline refuses: judged by its raw first segment
            first = target.partition("?")[0].lstrip("/").split("/", 1)[0]
        return first in self.claimed


ENGINE: Final = web.AppKey("engine", Engine)  # on the public app, once it has started
