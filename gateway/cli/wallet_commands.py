"""wallet and plugin commands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gateway.accounts import api_keys
from gateway.accounts.plugins import env_lines, plugin_defaults, provision_plugin, write_env_file
from gateway.cli.common import CliError, emit, json_parent, split_scopes, with_store
from gateway.config import Settings
from gateway.store import Store
from gateway.wire import client_json, wallet_entry_json

MAX_CREDIT = 10**12


TEST_LABEL = {"live": "", "test": " (test wallet)"}


async def wallet_credit(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    if not 0 < args.amount <= MAX_CREDIT:
        raise CliError(f"the amount must be a whole number from 1 to {MAX_CREDIT}")
    org = await api_keys.resolve_org(store, args.org)
    env = args.environment
    balance = await store.wallet_credit(org.id, args.amount, args.note, time.time(), env)
    emit(args, {"org_id": org.id, "environment": env, "balance": balance},
         [f"{org.name}{TEST_LABEL[env]}: balance {balance}"])  # fmt: skip


async def wallet_show(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org = await api_keys.resolve_org(store, args.org)
    env = args.environment
    balance = await store.wallet_balance(org.id, env)
    entries = await store.wallet_entries(org.id, None, args.last, env)
    emit(
        args,
        {
            "org_id": org.id,
            "environment": env,
            "balance": balance,
            "transactions": [wallet_entry_json(e) for e in entries],
        },
        [f"{org.name}{TEST_LABEL[env]}: balance {balance}"]
        + [
            f"  {e.kind:6} {e.amount:+d} -> {e.balance_after}  {e.route or e.note or ''}"
            for e in entries
        ],
    )


async def plugin_provision(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    org, scopes = plugin_defaults(settings, args.name)
    org = args.org or org
    wanted = split_scopes(args.scopes) if args.scopes else list(scopes)
    if org is None or not wanted:
        raise CliError(
            f"plugin {args.name!r} is not in config.yaml's plugins: give --org and --scopes"
        )
    provisioned = await provision_plugin(store, settings, args.name, org, wanted)
    lines = env_lines(settings, provisioned.registered)
    if args.env_file:
        write_env_file(Path(args.env_file), lines)
    data: dict[str, Any] = {
        **client_json(provisioned.registered.client),
        "client_secret": provisioned.registered.secret,
        "rotated": provisioned.rotated,
        "env_file": args.env_file,
    }
    human = [
        f"{'rotated' if provisioned.rotated else 'created'} {provisioned.registered.client.id} "
        f"for plugin {args.name}",
        f"wrote {args.env_file} (mode 0600)" if args.env_file else "",
        *([] if args.env_file else lines),
    ]
    emit(args, data, [line for line in human if line])


def register(sub: Any) -> None:
    js = json_parent()
    wallet = sub.add_parser("wallet", help="wallets for metered routes").add_subparsers(
        dest="sub", required=True
    )
    credit = wallet.add_parser("credit", parents=[js], help="add credits to an organization")
    credit.add_argument("org")
    credit.add_argument("amount", type=int)
    credit.add_argument("--note", help="why (kept with the transaction)")
    credit.add_argument("--environment", choices=("live", "test"), default="live")
    credit.set_defaults(func=with_store(wallet_credit))
    show = wallet.add_parser("show", parents=[js], help="balance and latest transactions")
    show.add_argument("org")
    show.add_argument("--last", type=int, default=20)
    show.add_argument("--environment", choices=("live", "test"), default="live")
    show.set_defaults(func=with_store(wallet_show))

    plugin = sub.add_parser("plugin", help="plugin credentials").add_subparsers(
        dest="sub", required=True
    )
    provision = plugin.add_parser(
        "provision", parents=[js], help="create or rotate a plugin's client and write its env file"
    )
    provision.add_argument("name")
    provision.add_argument("--org", help="default: the plugin's entry in config.yaml")
    provision.add_argument("--scopes", help="default: the plugin's entry in config.yaml")
    provision.add_argument("--env-file", help="write OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, ...")
    provision.set_defaults(func=with_store(plugin_provision))
