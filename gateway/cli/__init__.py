"""The ``gateway`` command: parse arguments, load config, call into the package.

Output is stable; ``--json`` prints exactly one JSON object on stdout. Errors
print one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from gateway.accounts.api_keys import InvalidInput
from gateway.cli import client_commands, core_commands, key_commands, wallet_commands
from gateway.cli.common import EXIT_USAGE, CliError
from gateway.config import config_path, load_config
from gateway.errors import ConfigError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        if message.startswith("the following arguments are required: ") and any(
            isinstance(a, argparse._SubParsersAction) and a.dest in message for a in self._actions
        ):
            self.print_help(sys.stderr)  # "gateway key": which key commands there are
            self.exit(EXIT_USAGE)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gateway", description="Authentication gateway.")
    parser.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (core_commands, key_commands, client_commands, wallet_commands):
        module.register(sub)
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
    except (CliError, InvalidInput) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0
