"""org and key commands."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.accounts import api_keys
from gateway.cli.common import emit, json_parent, split_scopes, with_store
from gateway.config import Settings
from gateway.store import Store
from gateway.wire import key_json, org_json, rfc3339


async def org_create(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.create_org(store, args.name)
    emit(args, org_json(org), [f"{org.id}  {org.name}"])


async def org_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    orgs = await store.list_orgs()
    emit(args, {"data": [org_json(o) for o in orgs]}, [f"{o.id}  {o.name}" for o in orgs])


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


async def key_revoke(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    key = await api_keys.revoke_api_key(store, args.id)
    emit(args, key_json(key), [f"revoked {key.id}"])


def register(sub: Any) -> None:
    js = json_parent()
    org = sub.add_parser("org", help="organizations").add_subparsers(dest="sub", required=True)
    create = org.add_parser("create", parents=[js])
    create.add_argument("name")
    create.set_defaults(func=with_store(org_create))
    org.add_parser("list", parents=[js]).set_defaults(func=with_store(org_list))

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True)
    create = key.add_parser("create", parents=[js])
    create.add_argument("--org", required=True, help="organization id or name")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help='space-separated, e.g. "a:read b:write"')
    create.add_argument("--expires-in", help="e.g. 3600s, 15m, 12h, 30d, 2w")
    create.add_argument("--environment", choices=("live", "test"), default="live",
                        help="test keys reach upstreams' test_url only")  # fmt: skip
    create.set_defaults(func=with_store(key_create))
    listing = key.add_parser("list", parents=[js])
    listing.add_argument("--org", required=True)
    listing.add_argument("--environment", choices=("live", "test"), help="one environment's")
    listing.set_defaults(func=with_store(key_list))
    revoke = key.add_parser("revoke", parents=[js])
    revoke.add_argument("id")
    revoke.set_defaults(func=with_store(key_revoke))
