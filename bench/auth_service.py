"""The peer arrangement's auth service: what a team writes for nginx auth_request.

A minimal aiohttp app on uvloop that hashes X-API-Key and looks the digest up in
a dict. Started by bench/run.py with the digests of the benchmark's keys, as one
process and as one per core (``--processes``, SO_REUSEPORT), the way a team would
tune it; the bench counts the faster.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import signal

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


def serve(port: int, digests: set[str]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(digests), host="127.0.0.1", port=port, access_log=None,
                print=None, reuse_port=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--digests", required=True, help="file with one hex digest per line")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    with open(args.digests, encoding="ascii") as f:
        digests = {line.strip() for line in f if line.strip()}
    if args.processes == 1:
        serve(args.port, digests)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=serve, args=(args.port, digests))
                for _ in range(args.processes)]  # fmt: skip
    for child in children:
        child.start()

    def stop(signum: int, frame: object) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
