"""The ``gateway`` command: parse arguments, load config, call into the package.

Output is stable; ``--json`` prints exactly one JSON object on stdout. Errors
print one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway import keys
from gateway.config import Settings, config_path, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.pipeline.paths import normalize
from gateway.pipeline.proxy import Target
from gateway.pipeline.routes import RouteTable
from gateway.store import ApiKey, Org, Store, StoreUnavailable, open_store

EXIT_USAGE = 2


class CliError(Exception):
    """One line for stderr."""


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def org_json(org: Org) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": rfc3339(org.created_at)}


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
        "revoked_at": rfc3339(key.revoked_at),
    }


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(data))
    else:
        for line in lines:
            print(line)


async def with_store(settings: Settings, work: Callable[[Store], Awaitable[None]]) -> None:
    store = open_store(settings)
    try:
        await store.connect()
        await store.migrate()
        await work(store)
    except StoreUnavailable as exc:
        raise CliError(f"the database is unavailable: {exc}") from None
    finally:
        await store.close()


# --- commands -------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from gateway.serve import run

    try:
        run(settings)
    except OSError as exc:
        raise CliError(f"cannot listen: {exc.strerror or exc}") from None


def cmd_config_check(settings: Settings, args: argparse.Namespace) -> None:
    emit(
        args,
        {"ok": True, "config": settings.source, "routes": len(settings.routes)},
        [f"{settings.source}: ok ({len(settings.routes)} routes, {len(settings.scopes)} scopes)"],
    )


def cmd_routes_explain(settings: Settings, args: argparse.Namespace) -> None:
    method = args.method.upper()
    try:
        path = normalize(args.path)
    except GatewayError as exc:
        raise CliError(f"400 {exc.message}") from None
    match = RouteTable(settings.routes).match(method, path.segments)
    if match is None:
        raise CliError(f"no route matches {method} {path.display}: the gateway answers 404")
    route = match.route
    upstream_url = Target.of(route.upstream, settings.upstreams[route.upstream]).url_for(
        route, path
    )
    data = {
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
            f"route:    routes[{route.index}] {route.path} "
            f"[{', '.join(sorted(route.methods)) if route.methods else 'any method'}]",
            f"auth:     {'none (public)' if route.public else 'required'}",
            f"scopes:   {' '.join(route.scopes) or '(none)'}",
            f"upstream: {route.upstream} -> {method} {upstream_url}",
        ],
    )


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        pass  # with_store applies pending migrations

    asyncio.run(with_store(settings, work))
    emit(args, {"ok": True}, [f"database ready: {settings.database.url}"])


def cmd_org_create(settings: Settings, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        org = await keys.create_org(store, args.name)
        emit(args, org_json(org), [f"{org.id}  {org.name}"])

    asyncio.run(with_store(settings, work))


def cmd_org_list(settings: Settings, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        orgs = await store.list_orgs()
        emit(args, {"data": [org_json(o) for o in orgs]}, [f"{o.id}  {o.name}" for o in orgs])

    asyncio.run(with_store(settings, work))


def split_scopes(text: str) -> list[str]:
    return [s for s in re.split(r"[\s,]+", text) if s]


def cmd_key_create(settings: Settings, args: argparse.Namespace) -> None:
    ttl = keys.parse_duration(args.expires_in) if args.expires_in else None

    async def work(store: Store) -> None:
        org = await keys.resolve_org(store, args.org)
        issued = await keys.issue_api_key(
            store,
            org,
            name=args.name,
            scopes=split_scopes(args.scopes),
            catalog=settings.scopes,
            ttl_seconds=ttl,
        )
        record = issued.record
        emit(
            args,
            {**key_json(record), "key": issued.secret},
            [
                f"id:      {record.id}",
                f"org:     {org.id} ({org.name})",
                f"scopes:  {' '.join(record.scopes)}",
                f"expires: {rfc3339(record.expires_at) or 'never'}",
                f"key:     {issued.secret}",
                "This key is shown once. Store it now; only its digest is kept.",
            ],
        )

    asyncio.run(with_store(settings, work))


def cmd_key_list(settings: Settings, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        org = await keys.resolve_org(store, args.org)
        found = await store.list_api_keys(org.id)
        emit(
            args,
            {"data": [key_json(k) for k in found]},
            [
                f"{k.id}  {k.prefix}...  {k.name!r}  [{' '.join(k.scopes)}]  "
                f"{'revoked' if k.revoked_at else 'expires ' + (rfc3339(k.expires_at) or 'never')}"
                f"  last used {rfc3339(k.last_used_at) or 'never'}"
                for k in found
            ],
        )

    asyncio.run(with_store(settings, work))


def cmd_key_revoke(settings: Settings, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        key = await keys.revoke_api_key(store, args.id)
        emit(args, key_json(key), [f"revoked {key.id}"])

    asyncio.run(with_store(settings, work))


# --- parsing --------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    json_flag = Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON object")

    parser = Parser(prog="gateway", description="Authentication gateway.")
    parser.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("serve", help="run the gateway in the foreground").set_defaults(func=cmd_serve)
    sub.add_parser(
        "migrate", parents=[json_flag], help="create or upgrade the database"
    ).set_defaults(func=cmd_migrate)

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="sub", required=True
    )
    config.add_parser(
        "check", parents=[json_flag], help="validate the config and exit"
    ).set_defaults(func=cmd_config_check)

    routes = sub.add_parser("routes", help="the route map").add_subparsers(
        dest="sub", required=True
    )
    explain = routes.add_parser("explain", parents=[json_flag], help="which route a request hits")
    explain.add_argument("method")
    explain.add_argument("path")
    explain.set_defaults(func=cmd_routes_explain)

    org = sub.add_parser("org", help="organizations").add_subparsers(dest="sub", required=True)
    org_create = org.add_parser("create", parents=[json_flag])
    org_create.add_argument("name")
    org_create.set_defaults(func=cmd_org_create)
    org.add_parser("list", parents=[json_flag]).set_defaults(func=cmd_org_list)

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True)
    key_create = key.add_parser("create", parents=[json_flag])
    key_create.add_argument("--org", required=True, help="organization id or name")
    key_create.add_argument("--name", required=True)
    key_create.add_argument(
        "--scopes", required=True, help='space-separated, e.g. "a:read b:write"'
    )
    key_create.add_argument("--expires-in", help="e.g. 3600s, 15m, 12h, 30d, 2w")
    key_create.set_defaults(func=cmd_key_create)
    key_list = key.add_parser("list", parents=[json_flag])
    key_list.add_argument("--org", required=True)
    key_list.set_defaults(func=cmd_key_list)
    key_revoke = key.add_parser("revoke", parents=[json_flag])
    key_revoke.add_argument("id")
    key_revoke.set_defaults(func=cmd_key_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_config(config_path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        args.func(settings, args)
    except (CliError, keys.Refused) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0
