"""``Expect: 100-continue`` (RFC 9110 §10.1.1), answered in our own terms.

aiohttp runs a route's expect handler before any middleware. For proxied
routes the gateway says "100 Continue" only once the request is authorized, so
an unauthenticated client is never invited to upload; anything but
``100-continue`` gets a JSON 417.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, web

from gateway.errors import ExpectationFailed
from gateway.middleware import new_request_id, render

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def wants_continue(request: web.BaseRequest) -> bool:
    return (
        request.version == HttpVersion11
        and request.headers.get("Expect", "").lower() == "100-continue"
    )


async def send_continue(request: web.BaseRequest) -> None:
    if wants_continue(request):
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the real response has not started


async def expect_later(request: web.Request) -> web.StreamResponse | None:
    """Proxied routes: the pipeline sends 100 Continue after authorization."""
    if request.version == HttpVersion11 and not wants_continue(request):
        response = render(ExpectationFailed(), new_request_id())
        response.force_close()
        return response
    return None


async def expect_now(request: web.Request) -> web.StreamResponse | None:
    """The gateway's own endpoints: continue at once, refuse anything else in JSON."""
    refused = await expect_later(request)
    if refused is None:
        await send_continue(request)
    return refused
