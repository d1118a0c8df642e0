"""Logging set-up and the JSON access log.

The access log never contains a credential: no query string (tokens travel
there in some clients), no request headers, only ids the gateway assigned.
It is one JSON object per line on stderr, written in batches (at most
``FLUSH_EVERY`` seconds late, and at shutdown) rather than one system call per
request: the profile of the request path showed the per-request write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, TextIO

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.exchange import Exchange

FLUSH_EVERY = 0.5  # seconds
FLUSH_LINES = 512
WHO_CACHED = 10_000  # credentials whose log fields are kept escaped
NOBODY = '"org_id":null,"credential_id":null,"auth_method":null'
NO_ERROR = '"error":null,"reason":null'


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log is replaced by ours.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def text(value: str | None) -> str:
    """A JSON string (ASCII, escaped as json.dumps escapes it) or null."""
    return "null" if value is None else encode_basestring_ascii(value)


@lru_cache(maxsize=WHO_CACHED)
def who_fields(org_id: str, credential_id: str, method: str) -> str:
    """A credential's fields of the access-log line, escaped once."""
    org, credential, how = text(org_id), text(credential_id), text(method)
    return f'"org_id":{org},"credential_id":{credential},"auth_method":{how}'


class AccessLog:
    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self._lines: list[str] = []

    def write(
        self,
        method: str,
        path: str,  # without the query string
        remote: str | None,
        exchange: Exchange,
        status: int,
        duration: float,
        error: GatewayError | None,
    ) -> None:
        if not self.enabled:
            return
        principal, trace = exchange.principal, exchange.trace
        traced = f'"{trace.trace_id}"' if trace is not None else "null"  # hex: no escaping
        upstream = exchange.upstream_seconds
        route = exchange.route.name if exchange.route is not None else exchange.endpoint
        who = NOBODY
        if principal is not None:
            who = who_fields(principal.org_id, principal.credential_id, principal.method)
        failed = NO_ERROR
        if error is not None:
            failed = f'"error":{text(error.code)},"reason":{text(error.reason)}'
        # The object json.dumps(..., separators=(",", ":")) would write, composed directly
        # (a third of the cost, on every request); times with three decimals. Request ids
        # are the gateway's own hex and need no escaping.
        self._lines.append(
            f'{{"ts":{time.time():.3f},"request_id":"{exchange.request_id}",'
            f'"trace_id":{traced},'
            f'"method":{text(method)},"path":{text(path[:512])},"route":{text(route)},'
            f'"status":{status},"duration_ms":{duration * 1000:.3f},'
            f'"upstream_ms":{"null" if upstream is None else f"{upstream * 1000:.3f}"},'
            f"{who},"
            f'"client_ip":{text(exchange.client_ip or remote)},'
            f"{failed}}}"
        )
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = self.stream or sys.stderr
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full stderr must not take requests down

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                self.flush()
        finally:
            self.flush()
