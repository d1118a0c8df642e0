"""user and client commands."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from gateway.accounts import api_keys, users
from gateway.cli.common import CliError, emit, json_parent, split_scopes, with_store
from gateway.config import Settings
from gateway.oauth import clients
from gateway.store import Store
from gateway.wire import client_json, user_json


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    raise CliError("give the password with --password-stdin (or run in a terminal)")


async def user_create(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    password = read_password(args)
    user = await users.create_user(store, args.email, password, args.org, args.role)
    emit(args, user_json(user), [f"{user.id}  {user.email}"])


async def user_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.resolve_org(store, args.org) if args.org else None
    found = await store.list_users(org.id if org else None)
    rows = []
    for user in found:
        roles = {m.org.name: m.role for m in await store.memberships(user.id)}
        rows.append((user, roles))
    emit(
        args,
        {"data": [{**user_json(u), "orgs": roles} for u, roles in rows]},
        [f"{u.id}  {u.email}  {' '.join(f'{o}:{r}' for o, r in roles.items())}"
         + ("  disabled" if u.disabled_at else "") for u, roles in rows],
    )  # fmt: skip


async def user_add_to_org(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    user = await users.add_to_org(store, args.email, args.org, args.role)
    emit(
        args,
        {**user_json(user), "org": args.org, "role": args.role},
        [f"{user.email} is now {args.role} of {args.org}"],
    )


async def client_create(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    registered = await clients.register_client(
        store,
        name=args.name,
        redirect_uris=args.redirect_uri or (),
        scopes=split_scopes(args.scopes),
        catalog=settings.scopes,
        public=args.public,
        grant_types=args.grant_type or (),
        org=args.org,
        allow_user_auth=args.allow_user_auth,
        allow_admin_scope=settings.oauth.allow_admin_scope,
        allowed_origins=args.allowed_origin or (),
        environment=args.environment,
    )
    client = registered.client
    lines = [f"client_id:     {client.id}"]
    if registered.secret:
        lines += [
            f"client_secret: {registered.secret}",
            "The secret is shown once. Store it now; only its digest is kept.",
        ]
    emit(args, {**client_json(client), "client_secret": registered.secret}, lines)


async def client_list(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    found = await store.list_clients()
    emit(
        args,
        {"data": [client_json(c) for c in found]},
        [
            f"{c.id}  {c.name!r}  {'public' if c.public else 'confidential'}  "
            f"[{' '.join(c.grant_types)}]{'  disabled' if c.disabled_at else ''}"
            for c in found
        ],
    )


async def client_disable(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    client = await clients.disable_client(store, args.client_id)
    emit(args, client_json(client), [f"disabled {client.id}; its tokens are revoked"])


async def user_set_password(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    user = await users.set_password(store, args.email, read_password(args))
    emit(args, user_json(user), [f"new password for {user.email}; their sessions have ended"])


async def user_disable(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    user = await users.disable_user(store, args.email)
    emit(args, user_json(user), [f"{user.email} is disabled; sessions ended, tokens revoked"])


def register(sub: Any) -> None:
    js = json_parent()
    user = sub.add_parser("user", help="people who sign in").add_subparsers(
        dest="sub", required=True
    )
    create = user.add_parser("create", parents=[js], help="a person who can sign in")
    create.add_argument("email")
    create.add_argument("--org", required=True, help="organization id or name")
    create.add_argument("--role", default="member", choices=users.ROLES)
    create.add_argument("--password-stdin", action="store_true", help="read the password")
    create.set_defaults(func=with_store(user_create))
    listing = user.add_parser("list", parents=[js], help="everyone, or one organization's")
    listing.add_argument("--org", help="organization id or name")
    listing.set_defaults(func=with_store(user_list))
    add = user.add_parser("add-to-org", parents=[js], help="membership in another organization")
    add.add_argument("email")
    add.add_argument("org")
    add.add_argument("--role", default="member", choices=users.ROLES)
    add.set_defaults(func=with_store(user_add_to_org))
    password = user.add_parser(
        "set-password", parents=[js], help="a new password; ends the user's sessions"
    )
    password.add_argument("email")
    password.add_argument("--password-stdin", action="store_true", help="read the password")
    password.set_defaults(func=with_store(user_set_password))
    disable = user.add_parser(
        "disable", parents=[js], help="no more sign-in; ends sessions, revokes tokens"
    )
    disable.add_argument("email")
    disable.set_defaults(func=with_store(user_disable))

    client = sub.add_parser("client", help="OAuth clients").add_subparsers(
        dest="sub", required=True
    )
    create = client.add_parser("create", parents=[js], help="register an OAuth client")
    create.add_argument("--name", required=True)
    create.add_argument("--redirect-uri", action="append", help="repeat for several")
    create.add_argument("--scopes", required=True, help="the client's ceiling, space-separated")
    create.add_argument("--public", action="store_true", help="no secret (native and SPA apps)")
    create.add_argument(
        "--grant-type", action="append", choices=clients.GRANT_TYPES, help="repeat for several"
    )
    create.add_argument(
        "--org",
        help="the organization whose app it is (its dashboard manages it); a "
        "client_credentials client acts for it",
    )
    create.add_argument("--environment", choices=("live", "test"), default="live",
                        help="the environment of its tokens")  # fmt: skip
    create.add_argument(
        "--allowed-origin",
        action="append",
        metavar="ORIGIN",
        help="repeat for several: a browser app's origin for the token endpoint (CORS)",
    )
    create.add_argument(
        "--allow-user-auth",
        action="store_true",
        help="legacy: accept auth_string (user credentials) with client_credentials",
    )
    create.set_defaults(func=with_store(client_create))
    client.add_parser("list", parents=[js], help="every OAuth client").set_defaults(
        func=with_store(client_list)
    )
    disable = client.add_parser("disable", parents=[js], help="a client and its tokens stop")
    disable.add_argument("client_id")
    disable.set_defaults(func=with_store(client_disable))
