"""The peer arrangement's auth service: what a team writes for nginx auth_request.

A minimal aiohttp app that hashes X-API-Key and looks the digest up in a dict.
Started by bench/run.py with the digests of the benchmark's keys.
"""

from __future__ import annotations

import argparse
import hashlib

from aiohttp import web


def create_app(digests: set[str]) -> web.Application:
    async def check(request: web.Request) -> web.Response:
        key = request.headers.get("X-API-Key", "")
        if hashlib.sha256(key.encode()).hexdigest() in digests:
            return web.Response(status=200)
        return web.Response(status=401)

    app = web.Application()
    app.router.add_get("/auth", check)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--digests", required=True, help="file with one hex digest per line")
    args = parser.parse_args()
    with open(args.digests, encoding="ascii") as f:
        digests = {line.strip() for line in f if line.strip()}
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(digests), host="127.0.0.1", port=args.port, access_log=None,
                print=None)  # fmt: skip


if __name__ == "__main__":
    main()
