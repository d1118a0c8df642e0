"""Time the head work of one proxied request, on the build in use.

    python bench/heads.py                          # compiled, where it was built
    GATEWAY_PURE_PYTHON=1 python bench/heads.py    # the same source as plain Python

Per request, as the engine does it: the client's head scanned, the fields the
pipeline reads looked up, the upstream's field lines copied out; the upstream's
answer head scanned and the client's head written from it. No sockets: this is
the part of a request's CPU that ``gateway/http/heads.py`` covers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.http import framing, heads  # noqa: E402

REQUEST = (
    b"GET /bench/x?page=2 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"X-API-Key: gwk_live_abcdefghijklmnopqrstuvwxyz0123456789\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 22:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 200\r\nConnection: keep-alive\r\n\r\n"
)
ROUNDS = 100_000


def request() -> Callable[[], object]:
    skip = heads.Skip(frozenset({b"host", b"x-api-key", b"authorization", b"connection"}))

    def run() -> object:
        fields = heads.scan_request(REQUEST).fields
        fields.get("X-API-Key"), fields.get("Authorization"), fields.get("Origin")
        fields.getall("traceparent", ())
        return fields.forwarded(skip, b"gateway_session")

    return run


def answer() -> Callable[[], object]:
    def run() -> object:
        reason, fields = heads.scan_response(ANSWER)
        relayed = framing.Relayed(fields, b"gateway_session", [("X-Request-Id", "1")])
        return framing.response_head("GET", 200, reason, relayed, 200, False)

    return run


def per_call(run: Callable[[], object]) -> float:
    run()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        run()
    return (time.perf_counter() - started) / ROUNDS * 1e6


def main() -> None:
    build = "compiled" if heads.COMPILED else "plain Python"
    print(f"{build}: request head {per_call(request()):.2f} µs, "
          f"answer head {per_call(answer()):.2f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
