"""What every CLI command shares: output, errors, and running against the store."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.config import Settings
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
    """Run an async command against the connected, migrated store."""

    async def run(settings: Settings, args: argparse.Namespace) -> None:
        store = open_store(settings)
        try:
            await store.connect()
            await store.migrate()
            await command(store, settings, args)
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
