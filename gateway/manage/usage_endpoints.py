"""/stats, /errors and /scopes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.config import Settings
from gateway.errors import ValidationFailed
from gateway.manage.auth import ManagementAuth
from gateway.manage.common import (
    environment_param,
    json_response,
    one,
    page,
    page_params,
    read_body,
    seq_cursor,
)
from gateway.manage.schemas import WalletCredit
from gateway.metering.usage import UsageBook
from gateway.store import Store
from gateway.store.records import UsageRow
from gateway.wire import error_json, wallet_entry_json

GROUPS: dict[str, Callable[[UsageRow], str]] = {
    "key": lambda r: r.credential_id,
    "route": lambda r: r.route,
    "status": lambda r: str(r.status),
    "ip": lambda r: r.client_ip,
    "day": lambda r: r.day,
}
DEFAULT_DAYS = 30
MAX_DAYS = 366


def parse_day(name: str, text: str) -> date:
    """YYYY-MM-DD or an RFC 3339 timestamp (its UTC date)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).date()
    except (ValueError, OverflowError):
        raise ValidationFailed(name, "expected YYYY-MM-DD or an RFC 3339 timestamp") from None


def totals(rows: list[UsageRow]) -> dict[str, int]:
    return {
        "requests": sum(r.requests for r in rows),
        "errors": sum(r.errors for r in rows),
        "paid_requests": sum(r.paid_requests for r in rows),
    }


class UsageApi:
    def __init__(
        self, store: Store, settings: Settings, auth: ManagementAuth, usage: UsageBook
    ) -> None:
        self.store = store
        self.settings = settings
        self.auth = auth
        self.usage = usage

    async def stats(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        today = datetime.now(UTC).date()
        to_text, from_text = one(request, "to"), one(request, "from")
        to_day = parse_day("to", to_text) if to_text else today
        if from_text:
            from_day = parse_day("from", from_text)
        else:
            try:
                from_day = to_day - timedelta(days=DEFAULT_DAYS - 1)
            except OverflowError:
                raise ValidationFailed("to", "too early a day") from None
        if from_day > to_day:
            raise ValidationFailed("from", "must not be after 'to'")
        if (to_day - from_day).days >= MAX_DAYS:
            raise ValidationFailed("from", f"a range covers at most {MAX_DAYS} days")
        group_by = one(request, "group_by")
        if group_by is not None and group_by not in GROUPS:
            raise ValidationFailed("group_by", f"one of: {', '.join(GROUPS)}")
        environment = environment_param(request) or "live"
        await self.usage.flush(self.store)  # this node's latest counts, then read them all
        rows = await self.store.usage(
            caller.org_id, from_day.isoformat(), to_day.isoformat(), environment
        )
        groups: list[dict[str, Any]] = []
        if group_by is not None:
            buckets: dict[str, list[UsageRow]] = {}
            for row in rows:
                buckets.setdefault(GROUPS[group_by](row), []).append(row)
            groups = [{"group": g, **totals(rs)} for g, rs in sorted(buckets.items())]
        return json_response({"environment": environment, **totals(rows), "groups": groups})

    async def errors(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        cursor, limit = page_params(request)
        before = seq_cursor(cursor)
        environment = environment_param(request) or "live"
        await self.usage.flush(self.store)
        found = await self.store.errors_page(caller.org_id, before, limit + 1, environment)
        last = str(found[limit - 1].seq) if len(found) > limit else None
        return json_response(page([error_json(e) for e in found], limit, last))

    async def wallet(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        environment = environment_param(request) or "live"
        balance = await self.store.wallet_balance(caller.org_id, environment)
        return json_response(
            {"org_id": caller.org_id, "environment": environment, "balance": balance}
        )

    async def test_credit(self, request: web.Request) -> web.Response:
        """Top up the test wallet: test credits are free, for the organization's admins."""
        caller = await self.auth.caller(request)
        body = await read_body(request, WalletCredit)
        balance = await self.store.wallet_credit(
            caller.org_id, body.amount, body.note, time.time(), "test"
        )
        return json_response({"org_id": caller.org_id, "environment": "test", "balance": balance})

    async def wallet_entries(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        cursor, limit = page_params(request)
        environment = environment_param(request) or "live"
        found = await self.store.wallet_entries(
            caller.org_id, seq_cursor(cursor), limit + 1, environment
        )
        last = str(found[limit - 1].seq) if len(found) > limit else None
        return json_response(page([wallet_entry_json(e) for e in found], limit, last))

    async def scopes(self, request: web.Request) -> web.Response:
        await self.auth.caller(request)
        data = [
            {
                "name": name,
                "description": text,
                "routes": [
                    {
                        "methods": list(r.methods) if r.methods else None,
                        "path": r.path,
                        "upstream": r.upstream,
                    }
                    for r in self.settings.routes
                    if name in r.scopes
                ],
            }
            for name, text in self.settings.scopes.items()
        ]
        return json_response({"data": data})
