"""W3C Trace Context through the gateway: the client's trace continued under the
gateway's span, or a new one, and the trace id in the access log."""

from __future__ import annotations

import json

import pytest
from conftest import Gateway

from gateway.app import ACCESS_LOG

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SENT = f"00-{TRACE_ID}-{PARENT}-01"


async def echoed(gw: Gateway, headers: dict[str, str]) -> dict[str, str]:
    key = await gw.mint(["contacts:read"])
    resp = await gw.client.get("/echo/traced", headers={"X-API-Key": key.secret, **headers})
    assert resp.status == 200
    return {k.lower(): v for k, v in (await resp.json())["headers"]}


async def test_the_upstream_continues_the_client_s_trace_under_the_gateway_s_span(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = await echoed(gw, {"traceparent": SENT, "tracestate": "vendor=abc"})
    version, trace_id, parent, flags = seen["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent != PARENT and len(parent) == 16  # the gateway's own span
    assert seen["tracestate"] == "vendor=abc"
    gw.app[ACCESS_LOG].flush()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.startswith("{")]  # fmt: skip
    assert [e["trace_id"] for e in lines if e["path"] == "/echo/traced"] == [TRACE_ID]


@pytest.mark.parametrize(
    "sent", ["", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"01-{TRACE_ID}-{PARENT}-01-x"]
)
async def test_without_a_valid_traceparent_a_trace_is_started(gw: Gateway, sent: str) -> None:
    seen = await echoed(gw, {"traceparent": sent} if sent else {})
    version, trace_id, parent, flags = seen["traceparent"].split("-")
    assert version == "00" and len(trace_id) == 32 and trace_id not in (TRACE_ID, "0" * 32)
    assert len(parent) == 16 and flags == "01"
