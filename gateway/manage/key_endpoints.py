"""/keys: the organization's API keys."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from aiohttp import web

from gateway.accounts import api_keys
from gateway.config import Settings
from gateway.errors import NotFound, ValidationFailed
from gateway.manage.auth import ManagementAuth
from gateway.manage.common import environment_param, json_response, page, page_params, read_body
from gateway.manage.schemas import KeyCreate, KeyPatch, LimitsIn
from gateway.store import ApiKey, Store
from gateway.wire import key_json


def limits_in(
    limits: LimitsIn | None, base: api_keys.KeyLimitsIn | None = None
) -> api_keys.KeyLimitsIn:
    """Merge a request's limits over the current ones (a field sent as null clears it)."""
    current = base or api_keys.KeyLimitsIn()
    if limits is None:
        return current
    sent = limits.model_fields_set

    def pick(name: str) -> Any:
        return getattr(limits, name) if name in sent else getattr(current, name)

    return api_keys.KeyLimitsIn(
        max_requests=pick("max_requests"),
        rate_limit=pick("rate_limit"),
        allowed_ips=tuple(limits.allowed_ips or ())
        if "allowed_ips" in sent
        else current.allowed_ips,
        max_paid_requests=pick("max_paid_requests"),
        max_spend=pick("max_spend"),
    )


def refused(field: str, exc: api_keys.InvalidInput) -> ValidationFailed:
    return ValidationFailed(field, str(exc))


def catalog_scopes(scopes: list[str], catalog: Mapping[str, str]) -> tuple[str, ...]:
    """Every scope must be in the catalog; the error names the offending item."""
    for i, scope in enumerate(scopes):
        if scope not in catalog:
            raise ValidationFailed(f"scopes[{i}]", f"unknown scope {scope!r}")
    return tuple(dict.fromkeys(scopes))


class KeysApi:
    def __init__(self, store: Store, settings: Settings, auth: ManagementAuth) -> None:
        self.store = store
        self.settings = settings
        self.auth = auth

    # --- operations (shared with the dashboard) ---

    async def key_of(self, org_id: str, key_id: str) -> ApiKey:
        key = await self.store.get_api_key(key_id)
        if key is None or key.org_id != org_id:
            raise NotFound()
        return key

    async def create_key(self, org_id: str, body: KeyCreate) -> dict[str, Any]:
        org = await self.store.find_org(org_id)
        assert org is not None
        expires_at = body.expires_at.timestamp() if body.expires_at else None
        if expires_at is not None and expires_at <= time.time():
            raise ValidationFailed("expires_at", "must be in the future")
        issued = await api_keys.issue_api_key(
            self.store,
            org,
            name=body.name,
            scopes=catalog_scopes(body.scopes, self.settings.scopes),
            catalog=self.settings.scopes,
            ttl_seconds=body.ttl,
            expires_at=expires_at,
            limits=limits_in(body.limits),
            environment=body.environment,
        )
        return {**key_json(issued.record), "key": issued.secret}

    async def rotate_key(self, org_id: str, key_id: str) -> dict[str, Any]:
        key = await self.key_of(org_id, key_id)
        try:
            issued = await api_keys.rotate_api_key(
                self.store, key, self.settings.management.rotation_grace
            )
        except api_keys.InvalidInput as exc:
            raise refused("", exc) from None
        return {**key_json(issued.record), "key": issued.secret}

    async def delete_key(self, org_id: str, key_id: str) -> None:
        await api_keys.delete_api_key(self.store, await self.key_of(org_id, key_id))

    # --- HTTP ---

    async def own_key(self, request: web.Request, org_id: str) -> ApiKey:
        return await self.key_of(org_id, request.match_info["key_id"])

    async def create(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        body = await read_body(request, KeyCreate)
        return json_response(await self.create_key(caller.org_id, body), status=201)

    async def list(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        after, limit = page_params(request)
        environment = environment_param(request)
        found = await self.store.list_api_keys_page(caller.org_id, after, limit + 1, environment)
        last = found[limit - 1].id if len(found) > limit else None
        return json_response(page([key_json(k) for k in found], limit, last))

    async def get(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        return json_response(key_json(await self.own_key(request, caller.org_id)))

    async def patch(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        key = await self.own_key(request, caller.org_id)
        body = await read_body(request, KeyPatch)
        sent = body.model_fields_set
        changes: dict[str, Any] = {}
        if body.name is not None:
            changes["name"] = body.name
        if body.scopes is not None:
            changes["scopes"] = catalog_scopes(body.scopes, self.settings.scopes)
        if body.ttl is not None:
            changes["expires_at"] = time.time() + body.ttl
        elif "expires_at" in sent:
            changes["expires_at"] = body.expires_at.timestamp() if body.expires_at else None
        if "limits" in sent:
            current = api_keys.KeyLimitsIn(
                key.max_requests,
                key.rate_limit,
                key.allowed_ips,
                key.max_paid_requests,
                key.max_spend,
            )
            merged = limits_in(body.limits, current) if body.limits else api_keys.KeyLimitsIn()
            changes.update(asdict(merged))
        try:
            updated = await api_keys.update_api_key(self.store, key, **changes)
        except api_keys.InvalidInput as exc:
            raise refused("expires_at", exc) from None
        return json_response(key_json(updated))

    async def delete(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        await self.delete_key(caller.org_id, request.match_info["key_id"])
        return web.Response(status=204)

    async def rotate(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        return json_response(await self.rotate_key(caller.org_id, request.match_info["key_id"]))
