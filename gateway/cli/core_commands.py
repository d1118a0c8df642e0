"""serve, migrate, config check, routes explain."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from gateway.cli.common import CliError, emit, json_parent, with_store
from gateway.config import Settings, case_insensitive
from gateway.errors import GatewayError
from gateway.pipeline.paths import normalize, refuse_params
from gateway.pipeline.routes import RouteTable
from gateway.pipeline.targets import Target
from gateway.store import Store

RELOAD_TIMEOUT = 30.0  # seconds: every worker builds its new routes and upstream pools


def serve(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.serve import run

    workers = settings.worker_count if args.workers is None else args.workers
    if workers < 1:
        raise CliError("--workers must be at least 1")
    try:
        run(settings, workers)
    except OSError as exc:
        raise CliError(f"cannot listen: {exc.strerror or exc}") from None


async def migrate(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    # with_store has applied the pending migrations by now.
    emit(args, {"ok": True}, [f"database ready: {settings.database.url}"])


def reload(settings: Settings, args: argparse.Namespace) -> None:
    """Ask the running node, through its admin listener, to read its config again."""
    admin = settings.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host  # noqa: S104
    url = f"http://{host}:{admin.port}/reload"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT) as response:  # noqa: S310
            done = json.load(response)
    except urllib.error.HTTPError as exc:  # 422: refused, with the reasons
        done = json.load(exc)
    except (OSError, ValueError) as exc:
        raise CliError(f"no node answers at {url}: {exc}") from None
    lines = [f"{done['outcome']}: config {done['config']}", *done["errors"]]
    emit(args, done, lines)
    if done["outcome"] != "applied":
        raise CliError(f"the reload was {done['outcome']}; the node keeps its config")


def config_check(settings: Settings, args: argparse.Namespace) -> None:
    emit(
        args,
        {"ok": True, "config": settings.source, "routes": len(settings.routes)},
        [f"{settings.source}: ok ({len(settings.routes)} routes, {len(settings.scopes)} scopes)"],
    )


def routes_explain(settings: Settings, args: argparse.Namespace) -> None:
    method = args.method.upper()
    try:
        path = normalize(args.path)
    except GatewayError as exc:
        raise CliError(f"400 {exc.message}") from None
    try:  # the server's own decision, by the same code
        match = RouteTable(settings.routes, case_insensitive(settings)).decide(
            method, path.segments
        )
        refuse_params(path, match.route.path_params)
    except GatewayError as exc:
        allow = exc.headers().get("Allow")
        raise CliError(
            f"{method} {path.display}: the gateway answers {exc.status} {exc.code}"
            + (f" (Allow: {allow})" if allow else "")
            + f": {exc.message}"
        ) from None
    route = match.route
    target = Target.of(route.upstream, settings.upstreams[route.upstream])
    upstream_url = target.url_for(route, path)
    methods = ", ".join(sorted(route.methods)) if route.methods else "any method"
    data: dict[str, Any] = {
        "route": route.name,
        "index": route.index,
        "path": route.path,
        "methods": sorted(route.methods) if route.methods else None,
        "auth": "none" if route.public else "required",
        "scopes": list(route.scopes),
        "params": match.params,
        "upstream": route.upstream,
        "upstream_url": upstream_url,
    }
    emit(
        args,
        data,
        [
            f"route:    routes[{route.index}] {route.path} [{methods}]",
            f"auth:     {'none (public)' if route.public else 'required'}",
            f"scopes:   {' '.join(route.scopes) or '(none)'}",
            f"upstream: {route.upstream} -> {method} {upstream_url}",
        ],
    )


def register(sub: Any) -> None:
    js = json_parent()
    serve_parser = sub.add_parser("serve", help="run the gateway in the foreground")
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the port (SO_REUSEPORT); default: config 'workers' (auto: cores)",
    )
    serve_parser.set_defaults(func=serve)
    sub.add_parser("migrate", parents=[js], help="create or upgrade the database").set_defaults(
        func=with_store(migrate)
    )
    sub.add_parser(
        "reload", parents=[js], help="make the running node read its config file again"
    ).set_defaults(func=reload)
    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="sub", required=True
    )
    config.add_parser("check", parents=[js], help="validate the config and exit").set_defaults(
        func=config_check
    )
    routes = sub.add_parser("routes", help="the route map").add_subparsers(
        dest="sub", required=True
    )
    explain = routes.add_parser("explain", parents=[js], help="which route a request hits")
    explain.add_argument("method")
    explain.add_argument("path")
    explain.set_defaults(func=routes_explain)
