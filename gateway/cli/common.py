"""What every CLI command shares: output, errors, and running against the store."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.config import Settings
from gateway.node.shared import tell_node
from gateway.store import Store, StoreUnavailable, open_store

EXIT_USAGE = 2
Command = Callable[[Settings, argparse.Namespace], None]
StoreCommand = Callable[[Store, Settings, argparse.Namespace], Awaitable[None]]


class CliError(Exception):
    """One line for stderr."""


def emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """``--json``: exactly one JSON object on stdout; otherwise the human lines."""
    if args.json:
        print(json.dumps(data))
    else:
        for line in lines:
            print(line)


def with_store(command: StoreCommand) -> Command:
    """Run an async command against the connected, migrated store; what it revoked or
    changed is published to the node serving this config on this machine, so that no
    worker accepts it once the command has returned."""

    async def run(settings: Settings, args: argparse.Namespace) -> None:
        store = open_store(settings)
        try:
            await store.connect()
            await store.migrate()
            before = await store.newest_credential_event()
            await command(store, settings, args)
            changed = await store.credential_events_since(before)
            tell_node(settings, [credential_id for _, credential_id in changed])
        except StoreUnavailable as exc:
            raise CliError(f"the database is unavailable: {exc}") from None
        finally:
            await store.close()

    def sync(settings: Settings, args: argparse.Namespace) -> None:
        asyncio.run(run(settings, args))

    return sync


def split_scopes(text: str) -> list[str]:
    return [s for s in re.split(r"[\s,]+", text) if s]


def json_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON object")
    return parent
