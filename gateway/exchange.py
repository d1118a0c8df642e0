"""What the gateway learns about one request as it passes through the pipeline,
and how an answered request is accounted for (metrics, usage, the access log),
whichever server answered it: the proxy engine or aiohttp's middleware.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.errors import GatewayError
from gateway.logs import AccessLog
from gateway.metering.usage import UsageBook
from gateway.metrics import Metrics, method_label, status_class

NO_ROUTE: Final = "-"
CLIENT_CLOSED: Final = 499  # nginx's convention for a connection cut mid-response

if TYPE_CHECKING:
    from gateway.pipeline.authn import Principal
    from gateway.pipeline.routes import CompiledRoute
    from gateway.tracing import Spans, Trace


@dataclass(slots=True)
class Exchange:
    request_id: str
    started: float
    route: CompiledRoute | None = None
    endpoint: str | None = None  # the gateway's own endpoint (OAuth, management), if any
    principal: Principal | None = None
    client_ip: str | None = None
    upstream_seconds: float | None = None  # from sending upstream to its response headers
    prepared_at: float | None = None  # when our response headers went out
    aborted: bool = False  # the connection was cut mid-body
    paid: bool = False  # a metered call that was charged and not refunded
    trace: Trace | None = None  # a proxied request's (``gateway.tracing``)


class RequestIds:
    """Unique ids without a system call per request: a random per-process prefix and a
    counter. (They identify requests; they are not secrets.)"""

    def __init__(self) -> None:
        self.prefix = ""
        self.counter = itertools.count()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = ""

    def __call__(self) -> str:
        if not self.prefix:
            self.prefix = os.urandom(6).hex()
        return f"{self.prefix}{next(self.counter):012x}"


new_request_id = RequestIds()


def finish(
    metrics: Metrics,
    usage: UsageBook,
    access_log: AccessLog,
    method: str,
    path: str,
    remote: str | None,
    exchange: Exchange,
    status: int,
    error: GatewayError | None,
    spans: Spans | None = None,
) -> None:
    """Account for one answered request: metrics, usage, the access log, and its span
    when spans are exported."""
    finished = time.perf_counter()
    if exchange.aborted:
        status = CLIENT_CLOSED
    record(metrics, usage, method, exchange, status, error, finished)
    access_log.write(method, path, remote, exchange, status, finished - exchange.started, error)
    if spans is not None:
        spans.end(exchange, method, status, finished - exchange.started)


def record(
    metrics: Metrics,
    usage: UsageBook,
    method: str,
    exchange: Exchange,
    status: int,
    error: GatewayError | None,
    finished: float,
) -> None:
    route = exchange.route.name if exchange.route is not None else exchange.endpoint or NO_ROUTE
    principal = exchange.principal
    metrics.count_request(
        route,
        method_label(method),
        status_class(status),
        principal.method if principal is not None else "none",
    )
    if error is not None and error.status in (401, 403):
        metrics.auth_failures.inc(error.reason)
    upstream = exchange.upstream_seconds or 0.0
    prepared = exchange.prepared_at or finished
    metrics.observe_overhead(route, max(prepared - exchange.started - upstream, 0.0))
    if principal is not None:
        usage.decided(
            org_id=principal.org_id,
            credential_id=principal.credential_id,
            route=route,
            status=status,
            client_ip=exchange.client_ip or "",
            now=time.time(),
            environment=principal.environment,
            paid=exchange.paid,
            failure=(exchange.request_id, method, error.reason) if error is not None else None,
        )
