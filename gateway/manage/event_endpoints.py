"""Webhook subscriptions, the organization's events, and every delivery attempt
("callbacks"), one environment at a time (``?environment=``, live by default)."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any, Final

from aiohttp import web

from gateway.config import Settings
from gateway.errors import NotFound, ValidationFailed
from gateway.events import signing
from gateway.events.targets import TargetRefused, check_host, check_url
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
from gateway.manage.schemas import SubscriptionCreate, SubscriptionPatch, ThresholdPatch
from gateway.store import Store
from gateway.store.records import Subscription
from gateway.wire import callback_json, event_json, subscription_json

ROTATION_GRACE: Final = 86400.0  # seconds the old secret still signs after a rotation
CALLBACK_STATUSES: Final = frozenset({"pending", "succeeded", "failed"})


class EventsApi:
    def __init__(self, store: Store, settings: Settings, auth: ManagementAuth) -> None:
        self.store = store
        self.settings = settings
        self.auth = auth

    async def checked_url(self, url: str) -> str:
        events = self.settings.events
        try:
            parsed = check_url(url, events.allow_http, events.allow_private_targets)
            await check_host(parsed, events.allow_private_targets)
        except TargetRefused as exc:
            raise ValidationFailed("url", str(exc)) from None
        return str(parsed)

    async def subscription_of(self, org_id: str, subscription_id: str) -> Subscription:
        found = await self.store.get_subscription(subscription_id)
        if found is None or found.org_id != org_id:
            raise NotFound()
        return found

    # --- subscriptions ---

    # --- operations (shared with the dashboard) ---

    async def subscribe(self, org_id: str, body: SubscriptionCreate) -> dict[str, Any]:
        sub = Subscription(
            id=f"sub_{secrets.token_hex(8)}",
            org_id=org_id,
            environment=body.environment,
            url=await self.checked_url(body.url),
            events=tuple(dict.fromkeys(body.events)),
            description=body.description,
            secret=signing.new_secret(),
            created_at=time.time(),
        )
        await self.store.insert_subscription(sub)
        return {**subscription_json(sub), "secret": sub.secret}

    async def retry_one(self, org_id: str, callback_id: str) -> dict[str, Any]:
        """Deliver a callback's event once more, now."""
        found = await self.store.get_callback(callback_id)
        if found is None or found.org_id != org_id:
            raise NotFound()
        return callback_json(await self.store.retry_callback(found, time.time()))

    # --- HTTP ---

    async def create(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        body = await read_body(request, SubscriptionCreate)
        return json_response(await self.subscribe(caller.org_id, body), status=201)

    async def list(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        environment = environment_param(request) or "live"
        found = await self.store.list_subscriptions(caller.org_id, environment)
        return json_response({"data": [subscription_json(s) for s in found]})

    async def get(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        sub_id = request.match_info["subscription_id"]
        return json_response(subscription_json(await self.subscription_of(caller.org_id, sub_id)))

    async def rotate_secret(self, org_id: str, subscription_id: str) -> dict[str, Any]:
        """A new secret; the old one still signs beside it for 24 hours."""
        sub = await self.subscription_of(org_id, subscription_id)
        rotated = replace(sub, secret=signing.new_secret(), previous_secret=sub.secret,
                          previous_until=time.time() + ROTATION_GRACE)  # fmt: skip
        await self.store.update_subscription(rotated)
        return {**subscription_json(rotated), "secret": rotated.secret}

    async def change(
        self, org_id: str, subscription_id: str, body: SubscriptionPatch
    ) -> dict[str, Any]:
        sub = await self.subscription_of(org_id, subscription_id)
        changed = replace(
            sub,
            url=await self.checked_url(body.url) if body.url is not None else sub.url,
            events=tuple(dict.fromkeys(body.events)) if body.events is not None else sub.events,
            description=body.description if body.description is not None else sub.description,
        )
        if body.enabled is not None:  # enabling again forgets the failures that disabled it
            disabled = None if body.enabled else (sub.disabled_at or time.time())
            changed = replace(changed, disabled_at=disabled, failing_since=None)
        await self.store.update_subscription(changed)
        return subscription_json(changed)

    async def remove(self, org_id: str, subscription_id: str) -> None:
        sub = await self.subscription_of(org_id, subscription_id)
        await self.store.delete_subscription(sub.id)

    async def patch(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        body = await read_body(request, SubscriptionPatch)
        sub_id = request.match_info["subscription_id"]
        return json_response(await self.change(caller.org_id, sub_id, body))

    async def delete(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        await self.remove(caller.org_id, request.match_info["subscription_id"])
        return web.Response(status=204)

    async def rotate(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        sub_id = request.match_info["subscription_id"]
        return json_response(await self.rotate_secret(caller.org_id, sub_id))

    # --- events and callbacks ---

    async def events(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        cursor, limit = page_params(request)
        environment = environment_param(request) or "live"
        found = await self.store.events_page(
            caller.org_id, environment, seq_cursor(cursor), limit + 1
        )
        last = str(found[limit - 1].seq) if len(found) > limit else None
        return json_response(page([event_json(e) for e in found], limit, last))

    async def callbacks(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        cursor, limit = page_params(request)
        environment = environment_param(request) or "live"
        status = one(request, "status")
        if status is not None and status not in CALLBACK_STATUSES:
            raise ValidationFailed("status", "one of: pending, succeeded, failed")
        found = await self.store.callbacks_page(
            caller.org_id, environment, seq_cursor(cursor), limit + 1, status=status,
            subscription_id=one(request, "subscription"),
            event_type=one(request, "event_type"),
        )  # fmt: skip
        last = str(found[limit - 1].seq) if len(found) > limit else None
        return json_response(page([callback_json(c) for c in found], limit, last))

    async def retry(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        again = await self.retry_one(caller.org_id, request.match_info["callback_id"])
        return json_response(again, status=201)

    async def threshold(self, request: web.Request) -> web.Response:
        """``PATCH /wallet``: the balance under which a debit records wallet.low."""
        caller = await self.auth.caller(request)
        environment = environment_param(request) or "live"
        body = await read_body(request, ThresholdPatch)
        await self.store.set_low_balance_threshold(
            caller.org_id, environment, body.low_balance_threshold
        )
        balance = await self.store.wallet_balance(caller.org_id, environment)
        return json_response({"org_id": caller.org_id, "environment": environment,
                              "balance": balance,
                              "low_balance_threshold": body.low_balance_threshold})  # fmt: skip
