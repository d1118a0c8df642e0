"""The management API: one table of operations drives both routing and the
OpenAPI 3.1 document, so the document cannot drift from what is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel

from gateway.config import Settings
from gateway.manage import schemas as s
from gateway.manage.app_endpoints import AppsApi
from gateway.manage.auth import ManagementAuth
from gateway.manage.event_endpoints import EventsApi
from gateway.manage.key_endpoints import KeysApi
from gateway.manage.openapi import build
from gateway.manage.usage_endpoints import UsageApi
from gateway.metering.usage import UsageBook
from gateway.store import Store
from gateway.web.endpoints import View, add_endpoint, bound


@dataclass(frozen=True, slots=True)
class ManagementApi:
    keys: KeysApi
    apps: AppsApi
    usage: UsageApi
    events: EventsApi


MANAGEMENT: Final = web.AppKey("management", ManagementApi)
Call = Callable[[ManagementApi, web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  # below the prefix
    call: Call
    summary: str
    ok: tuple[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()


PAGE = (
    Query("cursor", "next_cursor from the previous page", {"type": "string"}),
    Query("limit", "items per page (1 to 200, default 50)", {"type": "integer"}),
)
DAY = {"type": "string", "description": "YYYY-MM-DD or RFC 3339"}
LIVE_BY_DEFAULT = Query("environment", "live (the default) or test",
                        {"type": "string", "enum": ["live", "test"]})  # fmt: skip
ENVIRONMENT = Query("environment", "only live or only test records (default: both)",
                    {"type": "string", "enum": ["live", "test"]})  # fmt: skip

OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/keys", lambda m, r: m.keys.create(r), "Create an API key",
              (201, s.KeyCreated), body=s.KeyCreate),
    Operation("GET", "/keys", lambda m, r: m.keys.list(r), "List API keys",
              (200, s.KeyPage), query=(*PAGE, ENVIRONMENT)),
    Operation("GET", "/keys/{key_id}", lambda m, r: m.keys.get(r), "Get an API key",
              (200, s.KeyOut)),
    Operation("PATCH", "/keys/{key_id}", lambda m, r: m.keys.patch(r),
              "Change name, scopes, expiry or limits", (200, s.KeyOut), body=s.KeyPatch),
    Operation("DELETE", "/keys/{key_id}", lambda m, r: m.keys.delete(r), "Delete an API key",
              (204, None)),
    Operation("POST", "/keys/{key_id}/rotate", lambda m, r: m.keys.rotate(r),
              "Rotate the secret (shown once)", (200, s.KeyCreated)),
    Operation("GET", "/scopes", lambda m, r: m.usage.scopes(r),
              "The scope catalog and the routes each scope unlocks", (200, s.ScopeList)),
    Operation("POST", "/clients", lambda m, r: m.apps.create(r),
              "Register a developer application", (201, s.ClientCreated), body=s.ClientCreate),
    Operation("GET", "/clients", lambda m, r: m.apps.list(r), "List developer applications",
              (200, s.ClientPage), query=(*PAGE, ENVIRONMENT)),
    Operation("GET", "/clients/{client_id}", lambda m, r: m.apps.get(r),
              "Get a developer application", (200, s.ClientOut)),
    Operation("PATCH", "/clients/{client_id}", lambda m, r: m.apps.patch(r),
              "Change name, redirect URIs or allowed scopes", (200, s.ClientOut),
              body=s.ClientPatch),
    Operation("DELETE", "/clients/{client_id}", lambda m, r: m.apps.delete(r),
              "Delete an application and revoke its tokens", (204, None)),
    Operation("POST", "/clients/{client_id}/secret", lambda m, r: m.apps.rotate_secret(r),
              "Rotate the client secret (shown once)", (200, s.ClientSecret)),
    Operation("GET", "/grants", lambda m, r: m.apps.list_grants(r),
              "Connected apps: what users approved", (200, s.GrantPage), query=PAGE),
    Operation("DELETE", "/grants/{grant_id}", lambda m, r: m.apps.delete_grant(r),
              "Revoke a connected app and every token of it", (204, None)),
    Operation("GET", "/stats", lambda m, r: m.usage.stats(r), "Usage counts", (200, s.Stats),
              query=(Query("from", "first day (default: 29 days before 'to')", DAY),
                     Query("to", "last day (default: today, UTC)", DAY),
                     Query("group_by", "group the counts",
                           {"type": "string", "enum": ["key", "route", "status", "ip", "day"]}),
                     LIVE_BY_DEFAULT)),
    Operation("GET", "/errors", lambda m, r: m.usage.errors(r), "The latest failed requests",
              (200, s.ErrorPage), query=(*PAGE, LIVE_BY_DEFAULT)),
    Operation("GET", "/wallet", lambda m, r: m.usage.wallet(r), "A wallet's balance",
              (200, s.WalletOut), query=(LIVE_BY_DEFAULT,)),
    Operation("PATCH", "/wallet", lambda m, r: m.events.threshold(r),
              "Set the balance under which a debit records wallet.low", (200, s.WalletSettings),
              body=s.ThresholdPatch, query=(LIVE_BY_DEFAULT,)),
    Operation("POST", "/wallet/test/credit", lambda m, r: m.usage.test_credit(r),
              "Add free credits to the test wallet", (200, s.WalletOut), body=s.WalletCredit),
    Operation("GET", "/wallet/transactions", lambda m, r: m.usage.wallet_entries(r),
              "Credits, debits and refunds, newest first", (200, s.WalletPage),
              query=(*PAGE, LIVE_BY_DEFAULT)),
    Operation("POST", "/subscriptions", lambda m, r: m.events.create(r),
              "Subscribe a webhook URL to events", (201, s.SubscriptionCreated),
              body=s.SubscriptionCreate),
    Operation("GET", "/subscriptions", lambda m, r: m.events.list(r), "List subscriptions",
              (200, s.SubscriptionList), query=(LIVE_BY_DEFAULT,)),
    Operation("GET", "/subscriptions/{subscription_id}", lambda m, r: m.events.get(r),
              "Get a subscription", (200, s.SubscriptionOut)),
    Operation("PATCH", "/subscriptions/{subscription_id}", lambda m, r: m.events.patch(r),
              "Change, pause or resume a subscription", (200, s.SubscriptionOut),
              body=s.SubscriptionPatch),
    Operation("DELETE", "/subscriptions/{subscription_id}", lambda m, r: m.events.delete(r),
              "Delete a subscription", (204, None)),
    Operation("POST", "/subscriptions/{subscription_id}/secret",
              lambda m, r: m.events.rotate(r),
              "A new signing secret (the old one signs too for 24 hours)",
              (200, s.SubscriptionCreated)),
    Operation("GET", "/events", lambda m, r: m.events.events(r),
              "The organization's recent events, newest first", (200, s.EventPage),
              query=(*PAGE, LIVE_BY_DEFAULT)),
    Operation("GET", "/callbacks", lambda m, r: m.events.callbacks(r),
              "Every delivery attempt, newest first", (200, s.CallbackPage),
              query=(*PAGE, LIVE_BY_DEFAULT,
                     Query("status", "pending, succeeded or failed",
                           {"type": "string", "enum": ["pending", "succeeded", "failed"]}),
                     Query("subscription", "one subscription's", {"type": "string"}),
                     Query("event_type", "one event type's", {"type": "string"}))),
    Operation("POST", "/callbacks/{callback_id}/retry", lambda m, r: m.events.retry(r),
              "Deliver a callback's event once more, now", (201, s.CallbackOut)),
)  # fmt: skip


def add_management_routes(
    app: web.Application, settings: Settings, current: Callable[[], Settings]
) -> None:
    """``current``: the settings now (they change on a reload: the scope catalog)."""
    prefix = settings.management.prefix
    by_path: dict[str, dict[str, View]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = bound(MANAGEMENT, op.call)
    for path, table in by_path.items():
        add_endpoint(app, prefix + path, "manage:" + path, table)
    made: dict[int, dict[str, Any]] = {}  # the document, per settings object

    async def openapi(request: web.Request) -> web.Response:
        now = current()
        if id(now) not in made:
            made.clear()
            made[id(now)] = openapi_document(now)
        return web.json_response(made[id(now)])

    app.router.add_get(prefix + "/openapi.json", openapi)


def management_api(
    store: Store, settings: Settings, auth: ManagementAuth, usage: UsageBook
) -> ManagementApi:
    return ManagementApi(
        keys=KeysApi(store, settings, auth),
        apps=AppsApi(store, settings, auth),
        usage=UsageApi(store, settings, auth, usage),
        events=EventsApi(store, settings, auth),
    )


def openapi_document(settings: Settings) -> dict[str, Any]:
    return build(settings, OPERATIONS)
