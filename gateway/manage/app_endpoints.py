"""/clients (developer applications) and /grants (connected apps)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway import crypto
from gateway.accounts.api_keys import InvalidInput
from gateway.config import ADMIN_SCOPE, Settings
from gateway.errors import NotFound, ValidationFailed
from gateway.events import client_event, grant_event
from gateway.manage.auth import ManagementAuth
from gateway.manage.common import (
    environment_param,
    json_response,
    page,
    page_params,
    read_body,
)
from gateway.manage.key_endpoints import catalog_scopes
from gateway.manage.schemas import ClientCreate, ClientPatch
from gateway.oauth.clients import check_origin, check_redirect_uri, register_client
from gateway.store import Store
from gateway.store.records import OAuthClient
from gateway.wire import client_json, grant_json


class AppsApi:
    def __init__(self, store: Store, settings: Settings, auth: ManagementAuth) -> None:
        self.store = store
        self.settings = settings
        self.auth = auth

    async def own_client(self, request: web.Request, org_id: str) -> OAuthClient:
        return await self.client_of(org_id, request.match_info["client_id"])

    def redirect_uris(self, uris: list[str]) -> tuple[str, ...]:
        checked = []
        for i, uri in enumerate(uris):
            try:
                checked.append(check_redirect_uri(uri))
            except InvalidInput as exc:
                raise ValidationFailed(f"redirect_uris[{i}]", str(exc)) from None
        return tuple(dict.fromkeys(checked))

    # --- operations (shared with the dashboard) ---

    async def client_of(self, org_id: str, client_id: str) -> OAuthClient:
        found = await self.store.get_client(client_id)
        if found is None or found.client.owner_org_id != org_id:
            raise NotFound()
        return found.client

    async def create_client(self, org_id: str, body: ClientCreate) -> dict[str, Any]:
        org = await self.store.find_org(org_id)
        assert org is not None
        grants = tuple(body.grant_types or ())
        uris = self.redirect_uris(body.redirect_uris)
        try:
            registered = await register_client(
                self.store,
                name=body.name,
                redirect_uris=uris,
                scopes=catalog_scopes(body.scopes, self.settings.scopes),
                catalog=self.settings.scopes,
                public=body.public,
                grant_types=grants,
                org=org.id if "client_credentials" in grants else None,
                owner=org,
                allow_admin_scope=self.settings.oauth.allow_admin_scope,
                allowed_origins=body.allowed_origins,
                environment=body.environment,
            )
        except InvalidInput as exc:  # register_client names the field it refused
            raise ValidationFailed(exc.field, str(exc)) from None
        return {**client_json(registered.client), "client_secret": registered.secret}

    async def new_secret(self, org_id: str, client_id: str) -> dict[str, Any]:
        client = await self.client_of(org_id, client_id)
        if client.public:
            raise ValidationFailed("", "a public client has no secret")
        secret = crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)
        async with self.store.transaction():
            await self.store.set_client_secret(client.id, crypto.digest(secret))
            await self.store.add_event(client_event(client, org_id, "client.secret_rotated"))
        return {"client_id": client.id, "client_secret": secret}

    async def revoke_grant(self, org_id: str, grant_id: str, user_id: str | None) -> None:
        grant = await self.store.get_grant(grant_id)
        if grant is None or grant.org_id != org_id or grant.revoked_at is not None:
            raise NotFound()
        if user_id is not None and grant.user_id != user_id:
            raise NotFound()
        found = await self.store.get_client(grant.client_id)
        async with self.store.transaction():
            await self.store.revoke_grant(grant.id, time.time())
            if found is not None:
                await self.store.add_event(grant_event(found.client, grant, "grant.revoked"))

    # --- HTTP ---

    async def create(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        body = await read_body(request, ClientCreate)
        return json_response(await self.create_client(caller.org_id, body), status=201)

    async def list(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        after, limit = page_params(request)
        environment = environment_param(request)
        found = await self.store.list_clients_page(caller.org_id, after, limit + 1, environment)
        last = found[limit - 1].id if len(found) > limit else None
        return json_response(page([client_json(c) for c in found], limit, last))

    async def get(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        return json_response(client_json(await self.own_client(request, caller.org_id)))

    async def patch(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        client = await self.own_client(request, caller.org_id)
        body = await read_body(request, ClientPatch)
        updated = client
        if body.name is not None:
            updated = replace(updated, name=body.name.strip() or client.name)
        if body.redirect_uris is not None:
            uris = self.redirect_uris(body.redirect_uris)
            if not uris and "authorization_code" in client.grant_types:
                raise ValidationFailed("redirect_uris", "this app needs at least one")
            updated = replace(updated, redirect_uris=uris)
        if body.scopes is not None:
            scopes = catalog_scopes(body.scopes, self.settings.scopes)
            if ADMIN_SCOPE in scopes and not self.settings.oauth.allow_admin_scope:
                raise ValidationFailed("scopes", f"{ADMIN_SCOPE} cannot be granted to apps")
            updated = replace(updated, allowed_scopes=scopes)
        if body.allowed_origins is not None:
            try:
                found = tuple(dict.fromkeys(check_origin(o) for o in body.allowed_origins))
            except InvalidInput as exc:
                raise ValidationFailed("allowed_origins", str(exc)) from None
            updated = replace(updated, allowed_origins=found)
        await self.store.update_client(updated)
        return json_response(client_json(updated))

    async def delete(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        client = await self.own_client(request, caller.org_id)
        await self.store.delete_client(client.id, time.time())
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        client_id = request.match_info["client_id"]
        return json_response(await self.new_secret(caller.org_id, client_id))

    async def list_grants(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        after, limit = page_params(request)
        found = await self.store.list_grants_page(caller.org_id, None, after, limit + 1)
        last = found[limit - 1].id if len(found) > limit else None
        return json_response(page([grant_json(g) for g in found], limit, last))

    async def delete_grant(self, request: web.Request) -> web.Response:
        caller = await self.auth.caller(request)
        await self.revoke_grant(caller.org_id, request.match_info["grant_id"], None)
        return web.Response(status=204)
