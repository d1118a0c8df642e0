"""What the gateway learns about one request as it passes through the pipeline.

One typed object under one request key, read by the middleware for metrics and
the access log once the pipeline is done with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.pipeline.authn import Principal
    from gateway.pipeline.routes import CompiledRoute


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
