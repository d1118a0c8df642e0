"""``python -m upstream_example --port 9001 [--host 127.0.0.1]``."""

from __future__ import annotations

import argparse

from aiohttp import web

from upstream_example.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m upstream_example",
        description="Run the example backend that stands behind the gateway.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=9001, help="port to bind (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    print(f"upstream_example listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(create_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
