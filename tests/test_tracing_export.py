"""Spans of proxied requests exported over OTLP to a real OTLP/HTTP receiver on
loopback, decoded with OpenTelemetry's own protobuf classes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from conftest import AiohttpServer, Gateway
from oauth_helpers import with_config
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SENT = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[str, list[Any]]:
    spans: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}/v1/traces", spans


@pytest.fixture
def config(config: dict[str, Any], receiver: tuple[str, list[Any]]) -> dict[str, Any]:
    config["tracing"] = {"otlp_endpoint": receiver[0]}
    return config


@with_config("exported", routes=[{"path": "/echo/**", "upstream": "main", "id": "echo"}])
async def test_each_proxied_request_is_one_exported_span(
    gw: Gateway, receiver: tuple[str, list[Any]]
) -> None:
    _, spans = receiver
    for _ in range(3):
        key = await gw.mint(["contacts:read"])
        resp = await gw.client.get("/echo/x", headers={"X-API-Key": key.secret,
                                                       "traceparent": SENT})  # fmt: skip
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while len(spans) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len(spans) == 3
    org = await gw.org()
    for span in spans:
        attributes = {a.key: a.value for a in span.attributes}
        assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT
        assert attributes["http.route"].string_value == "echo"
        assert attributes["http.response.status_code"].int_value == 200
        assert attributes["gateway.org_id"].string_value == org.id
        assert span.end_time_unix_nano > span.start_time_unix_nano
