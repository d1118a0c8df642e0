"""W3C Trace Context for proxied requests, and spans exported over OTLP.

Every proxied request belongs to a trace: the client's (``traceparent``), or a new
one. The gateway's own span is the parent the upstream sees: its ``traceparent``
carries the trace id and the gateway's span id, and the client's ``tracestate``
passes unchanged. The trace id is in the access log.

With ``tracing.otlp_endpoint`` set, each proxied request's span (route, status,
organization) is exported by OpenTelemetry's SDK (the optional ``tracing``
extra), batched in its own thread. Without it nothing is imported and nothing is
exported: the request path only draws two random ids.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import ConfigError
from gateway.pipeline.headers import FieldView

if TYPE_CHECKING:
    from gateway.config.sections import Tracing
    from gateway.exchange import Exchange

# version 00, a 32-hex trace id, a 16-hex parent id, 2-hex flags (W3C Trace Context §3.2)
TRACEPARENT: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
ZERO_TRACE: Final = "0" * 32
ZERO_SPAN: Final = "0" * 16


@dataclass(slots=True)
class Trace:
    trace_id: str
    span_id: str  # the gateway's span: the upstream's parent
    parent_id: str | None  # the client's span, if it sent one
    flags: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def continue_trace(headers: FieldView) -> Trace:
    """The client's trace, or a new one (an absent, repeated or malformed
    ``traceparent`` starts a new trace, as the specification says)."""
    sent = headers.getall("traceparent", ())
    found = TRACEPARENT.match(sent[0].strip()) if len(sent) == 1 else None
    if found is not None and found.group(1) != ZERO_TRACE and found.group(2) != ZERO_SPAN:
        trace_id, parent, flags = found.groups()
        return Trace(trace_id, span_id(), parent, flags)
    return Trace(f"{random.getrandbits(128) or 1:032x}", span_id(), None, "01")


def span_id() -> str:
    """A new span id. Trace ids identify, they guard nothing: no system call for them."""
    return f"{random.getrandbits(64) or 1:016x}"


class Spans:
    """Proxied requests' spans, exported over OTLP/HTTP by OpenTelemetry's SDK."""

    def __init__(self, settings: Tracing) -> None:
        try:  # imported once here, never on the request path
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import ReadableSpan
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
            from opentelemetry.trace.status import Status, StatusCode
        except ImportError:
            raise ConfigError(
                ["tracing.otlp_endpoint needs the tracing extra: pip install 'gateway[tracing]'"]
            ) from None
        self.resource = Resource.create({"service.name": settings.service_name})
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        self.processor: Any = BatchSpanProcessor(exporter, schedule_delay_millis=500)
        self.span, self.context, self.flags = ReadableSpan, SpanContext, TraceFlags
        self.server = SpanKind.SERVER
        self.ok, self.failed = Status(StatusCode.UNSET), Status(StatusCode.ERROR)

    def end(self, exchange: Exchange, method: str, status: int, seconds: float) -> None:
        """The span of one answered request (``seconds`` long, ending now), handed to the
        exporting thread."""
        trace = exchange.trace
        if trace is None:
            return
        trace_id, flags = int(trace.trace_id, 16), self.flags(int(trace.flags, 16))
        parent = (self.context(trace_id, int(trace.parent_id, 16), True, flags)
                  if trace.parent_id else None)  # fmt: skip
        principal, route = exchange.principal, exchange.route
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.response.status_code": status,
            "http.route": route.name if route is not None else "-",
            "gateway.request_id": exchange.request_id,
        }
        if principal is not None:
            attributes["gateway.org_id"] = principal.org_id
            attributes["gateway.auth_method"] = principal.method
        span = self.span(
            name=f"{method} {attributes['http.route']}",
            context=self.context(trace_id, int(trace.span_id, 16), False, flags),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            kind=self.server,
            status=self.failed if status >= 500 else self.ok,
            start_time=(ended := time.time_ns()) - int(seconds * 1e9),
            end_time=ended,
        )
        self.processor.on_end(span)

    def close(self) -> None:
        self.processor.shutdown()  # exports what is left
