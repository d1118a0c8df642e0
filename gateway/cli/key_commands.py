"""org and key commands."""

from __future__ import annotations

import argparse
import time
from typing import Any

from gateway.accounts import api_keys
from gateway.cli.common import CliError, emit, json_parent, split_scopes, with_store
from gateway.config import Settings
from gateway.store import Store
from gateway.wire import key_json, org_json, rfc3339


async def org_create(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.create_org(store, args.name)
    emit(args, org_json(org), [f"{org.id}  {org.name}"])


async def org_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    orgs = await store.list_orgs()
    emit(args, {"data": [org_json(o) for o in orgs]}, [f"{o.id}  {o.name}" for o in orgs])


async def org_delete(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.resolve_org(store, args.org)
    live = await store.live_credentials(org.id, time.time())
    if live and not args.force:
        raise CliError(
            f"{org.name} has {live} live credential(s): revoke them first, or use --force"
        )
    await store.delete_org(org.id, time.time())
    emit(args, {**org_json(org), "deleted": True, "revoked": live},
         [f"deleted {org.id} ({org.name}); {live} credential(s) revoked"])  # fmt: skip


async def key_create(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    ttl = api_keys.parse_duration(args.expires_in) if args.expires_in else None
    org = await api_keys.resolve_org(store, args.org)
    issued = await api_keys.issue_api_key(
        store,
        org,
        name=args.name,
        scopes=split_scopes(args.scopes),
        catalog=settings.scopes,
        ttl_seconds=ttl,
        environment=args.environment,
    )
    record = issued.record
    emit(
        args,
        {**key_json(record), "key": issued.secret},
        [
            f"id:      {record.id}",
            f"org:     {org.id} ({org.name})",
            f"env:     {record.environment}",
            f"scopes:  {' '.join(record.scopes)}",
            f"expires: {rfc3339(record.expires_at) or 'never'}",
            f"key:     {issued.secret}",
            "This key is shown once. Store it now; only its digest is kept.",
        ],
    )


async def key_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.resolve_org(store, args.org)
    found = [k for k in await store.list_api_keys(org.id)
             if args.environment in (None, k.environment)]  # fmt: skip

    def line(k: Any) -> str:
        state = "revoked" if k.revoked_at else "expires " + (rfc3339(k.expires_at) or "never")
        return (
            f"{k.id}  {k.environment}  {k.prefix}...  {k.name!r}  [{' '.join(k.scopes)}]  {state}"
            f"  last used {rfc3339(k.last_used_at) or 'never'}"
        )

    emit(args, {"data": [key_json(k) for k in found]}, [line(k) for k in found])


async def key_rotate(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    key = await store.get_api_key(args.id)
    if key is None:
        raise CliError(f"unknown key {args.id!r}")
    grace = api_keys.parse_duration(args.grace) if args.grace else 0
    issued = await api_keys.rotate_api_key(store, key, grace)
    emit(
        args,
        {**key_json(issued.record), "key": issued.secret},
        [
            f"id:      {issued.record.id}",
            f"key:     {issued.secret}",
            f"The old secret {'works for ' + args.grace if grace else 'no longer works'}.",
            "This key is shown once. Store it now; only its digest is kept.",
        ],
    )


async def key_revoke(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    key = await api_keys.revoke_api_key(store, args.id)
    emit(args, key_json(key), [f"revoked {key.id}"])


def register(sub: Any) -> None:
    js = json_parent()
    org = sub.add_parser("org", help="organizations").add_subparsers(dest="sub", required=True)
    create = org.add_parser("create", parents=[js], help="a new organization")
    create.add_argument("name")
    create.set_defaults(func=with_store(org_create))
    org.add_parser("list", parents=[js], help="every organization").set_defaults(
        func=with_store(org_list)
    )
    delete = org.add_parser("delete", parents=[js], help="an organization and all that is its")
    delete.add_argument("org", help="organization id or name")
    delete.add_argument("--force", action="store_true", help="even with live credentials")
    delete.set_defaults(func=with_store(org_delete))

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True)
    create = key.add_parser("create", parents=[js], help="a new key, shown once")
    create.add_argument("--org", required=True, help="organization id or name")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help='space-separated, e.g. "a:read b:write"')
    create.add_argument("--expires-in", help="e.g. 3600s, 15m, 12h, 30d, 2w")
    create.add_argument("--environment", choices=("live", "test"), default="live",
                        help="test keys reach upstreams' test_url only")  # fmt: skip
    create.set_defaults(func=with_store(key_create))
    listing = key.add_parser("list", parents=[js], help="an organization's keys")
    listing.add_argument("--org", required=True, help="organization id or name")
    listing.add_argument("--environment", choices=("live", "test"), help="one environment's")
    listing.set_defaults(func=with_store(key_list))
    rotate = key.add_parser("rotate", parents=[js], help="a new secret for a key, shown once")
    rotate.add_argument("id")
    rotate.add_argument("--grace", help="how long the old secret still works, e.g. 1h (default: 0)")
    rotate.set_defaults(func=with_store(key_rotate))
    revoke = key.add_parser("revoke", parents=[js], help="a key stops working at once")
    revoke.add_argument("id")
    revoke.set_defaults(func=with_store(key_revoke))
