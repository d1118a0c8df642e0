"""The dashboard: keys, developer applications, connected apps and usage.

Server-rendered pages over the same operations as the management API (so both
refuse the same things the same way). Every form carries the session's CSRF
token. Owners and admins manage their organization; every signed-in user sees
and can revoke the apps they approved.
"""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web
from aiohttp_session import Session
from multidict import MultiMapping

from gateway.accounts.users import ADMIN_ROLES
from gateway.config import Settings
from gateway.errors import ApiError, ValidationFailed
from gateway.manage import ManagementApi
from gateway.manage.common import validate
from gateway.manage.schemas import ClientCreate, KeyCreate
from gateway.metering.usage import UsageBook
from gateway.store import Store
from gateway.store.records import Membership
from gateway.web.endpoints import View, add_endpoint
from gateway.web.pages import error_page, form_list, optional_int, render
from gateway.web.session import (
    CSRF_FIELD,
    ENVIRONMENTS,
    REVEAL,
    Sessions,
    csrf_ok,
    csrf_token,
    environment,
)
from gateway.web.usage_page import UsagePage
from gateway.web.webhooks_page import WebhooksPage
from gateway.wire import rfc3339


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class NotAdmin(Exception):
    """The page needs an owner or admin of the current organization."""


def is_admin(memberships: list[Membership], org_id: str) -> bool:
    return any(m.org.id == org_id and m.role in ADMIN_ROLES for m in memberships)


class Dashboard:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        sessions: Sessions,
        api: ManagementApi,
        usage: UsageBook,
    ) -> None:
        self.store = store
        self.settings = settings
        self.sessions = sessions
        self.api = api
        self.usage = usage
        self.base = settings.dashboard.path
        self.login = settings.oauth.paths.login
        self.webhooks = WebhooksPage(self)
        self.usage_page = UsagePage(self)

    # --- plumbing ---

    async def context(self, request: web.Request) -> tuple[Session, list[Membership], str]:
        """The signed-in user's session, memberships and current organization."""
        session = await self.sessions.load(request)
        user_id = session.get("user_id")
        if not isinstance(user_id, str):
            raise Redirect(f"{self.login}?next={self.base}")
        memberships = await self.store.memberships(user_id)
        ids = [m.org.id for m in memberships]
        org_id = session.get("org_id")
        if org_id not in ids:
            org_id = ids[0] if ids else ""
            session["org_id"] = org_id
        return session, memberships, org_id

    def page(
        self,
        request: web.Request,
        session: Session,
        memberships: list[Membership],
        org_id: str,
        template: str,
        data: dict[str, Any],
        *,
        status: int = 200,
    ) -> web.Response:
        context = {
            "base": self.base,
            "email": session.get("email"),
            "orgs": [{"id": m.org.id, "name": m.org.name} for m in memberships],
            "org_id": org_id,
            "is_admin": is_admin(memberships, org_id),
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(session),
            "logout": self.settings.oauth.paths.logout,
            "environment": environment(session),
            "product": self.settings.dashboard.product_name,
            **data,
        }
        return render(request, template, context, status=status, scripts=True)

    async def reveal(
        self, request: web.Request, session: Session, page: str, **shown: Any
    ) -> web.Response:
        """Post/redirect/get: the new secret rides in the encrypted session cookie to the
        next page view, which shows it once; reloading that page creates nothing."""
        session[REVEAL] = {page: shown}
        return await self.respond(request, session, see_other(f"{self.base}/{page}"))

    async def respond(
        self, request: web.Request, session: Session, response: web.Response
    ) -> web.Response:
        await self.sessions.save(request, response, session)
        return response

    async def checked_form(self, request: web.Request, session: Session) -> MultiMapping[Any]:
        form = await request.post()
        sent = form.get(CSRF_FIELD)
        if not csrf_ok(session, sent if isinstance(sent, str) else None):
            raise ValidationFailed("", "your session expired; reload the page and try again")
        return form

    def admin_org(self, memberships: list[Membership], org_id: str) -> str:
        if not is_admin(memberships, org_id):
            raise NotAdmin()
        return org_id

    # --- pages ---

    async def home(self, request: web.Request) -> web.Response:
        raise Redirect(f"{self.base}/keys")

    async def switched(self, request: web.Request, session: Session, field: str) -> str | None:
        """What a switch's form chose, when the form is this session's own."""
        form = await request.post()
        sent = form.get(CSRF_FIELD)
        wanted = form.get(field)
        if csrf_ok(session, sent if isinstance(sent, str) else None) and isinstance(wanted, str):
            return wanted
        return None

    async def switch_org(self, request: web.Request) -> web.Response:
        session, memberships, _ = await self.context(request)
        wanted = await self.switched(request, session, "org_id")
        if wanted in {m.org.id for m in memberships}:
            session["org_id"] = wanted
        response = see_other(f"{self.base}/keys")
        return await self.respond(request, session, response)

    async def switch_environment(self, request: web.Request) -> web.Response:
        """The Test/Live switch: which environment's keys, apps and usage are shown and
        created, until switched back."""
        session, _, _ = await self.context(request)
        wanted = await self.switched(request, session, "environment")
        if wanted in ENVIRONMENTS:
            session["environment"] = wanted
        back = (await request.post()).get("back")
        section = back if isinstance(back, str) and back in SECTIONS else "keys"
        return await self.respond(request, session, see_other(f"{self.base}/{section}"))

    async def keys_page(
        self,
        request: web.Request,
        *,
        error: str | None = None,
    ) -> web.Response:
        session, memberships, org_id = await self.context(request)
        listing: list[dict[str, Any]] = []
        if is_admin(memberships, org_id):
            shown = environment(session)
            found = [k for k in await self.store.list_api_keys(org_id) if k.environment == shown]
            listing = [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "scopes": k.scopes,
                    "created": rfc3339(k.created_at),
                    "last_used": rfc3339(k.last_used_at) or "never",
                    "expires": rfc3339(k.expires_at) or "never",
                    "revoked": k.revoked_at is not None,
                    "requests": k.request_count,
                }
                for k in found
            ]
        data = {
            "keys": listing,
            "scopes": self.settings.scopes,
            "shown": session.pop(REVEAL, {}).get("keys"),
            "error": error,
            "section": "keys",
        }
        status = 400 if error else 200
        response = self.page(request, session, memberships, org_id, "dash_keys.html", data,
                             status=status)  # fmt: skip
        return await self.respond(request, session, response)

    async def keys_view(self, request: web.Request) -> web.Response:
        return await self.keys_page(request)

    async def key_create(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        try:
            form = await self.checked_form(request, session)
            org_id = self.admin_org(memberships, org_id)
            days = optional_int(form, "expires_in_days")
            body = validate(
                KeyCreate,
                {
                    "name": str(form.get("name", "")),
                    "scopes": [str(s) for s in form.getall("scopes", [])],
                    "ttl": days * 86400 if days else None,
                    "environment": environment(session),
                    "limits": {
                        "rate_limit": optional_int(form, "rate_limit"),
                        "max_requests": optional_int(form, "max_requests"),
                        "allowed_ips": form_list(str(form.get("allowed_ips", ""))) or None,
                    },
                },
            )
            created = await self.api.keys.create_key(org_id, body)
        except ApiError as exc:
            return await self.keys_page(request, error=exc.message)
        return await self.reveal(request, session, "keys", label=created["name"],
                                 secret=created["key"])  # fmt: skip

    async def key_rotate(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        try:
            await self.checked_form(request, session)
            org_id = self.admin_org(memberships, org_id)
            rotated = await self.api.keys.rotate_key(org_id, request.match_info["key_id"])
        except ApiError as exc:
            return await self.keys_page(request, error=exc.message)
        return await self.reveal(request, session, "keys", label=rotated["name"],
                                 secret=rotated["key"])  # fmt: skip

    async def key_revoke(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        try:
            await self.checked_form(request, session)
            org_id = self.admin_org(memberships, org_id)
            key = await self.api.keys.key_of(org_id, request.match_info["key_id"])
            if key.revoked_at is None:
                await self.store.revoke_api_key(key.id, time.time())
        except ApiError as exc:
            return await self.keys_page(request, error=exc.message)
        raise Redirect(f"{self.base}/keys")

    # --- developer applications ---

    async def apps_page(
        self,
        request: web.Request,
        *,
        error: str | None = None,
    ) -> web.Response:
        session, memberships, org_id = await self.context(request)
        apps = []
        if is_admin(memberships, org_id):
            shown = environment(session)
            apps = await self.store.list_clients_page(org_id, None, 500, shown)
        data = {
            "apps": apps,
            "scopes": {k: v for k, v in self.settings.scopes.items() if k != "gateway:admin"},
            "shown": session.pop(REVEAL, {}).get("apps"),
            "error": error,
            "section": "apps",
        }
        response = self.page(request, session, memberships, org_id, "dash_apps.html", data,
                             status=400 if error else 200)  # fmt: skip
        return await self.respond(request, session, response)

    async def apps_view(self, request: web.Request) -> web.Response:
        return await self.apps_page(request)

    async def app_create(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        try:
            form = await self.checked_form(request, session)
            org_id = self.admin_org(memberships, org_id)
            body = validate(
                ClientCreate,
                {
                    "name": str(form.get("name", "")),
                    "redirect_uris": form_list(str(form.get("redirect_uris", ""))),
                    "scopes": [str(s) for s in form.getall("scopes", [])],
                    "public": form.get("public") == "on",
                    "environment": environment(session),
                },
            )
            created = await self.api.apps.create_client(org_id, body)
        except ApiError as exc:
            return await self.apps_page(request, error=exc.message)
        return await self.reveal(request, session, "apps", client_id=created["client_id"],
                                 secret=created["client_secret"])  # fmt: skip

    async def app_secret(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        try:
            await self.checked_form(request, session)
            org_id = self.admin_org(memberships, org_id)
            new = await self.api.apps.new_secret(org_id, request.match_info["client_id"])
        except ApiError as exc:
            return await self.apps_page(request, error=exc.message)
        return await self.reveal(request, session, "apps", client_id=new["client_id"],
                                 secret=new["client_secret"])  # fmt: skip

    # --- connected apps (this user's approvals, every organization) ---

    async def connected_view(self, request: web.Request) -> web.Response:
        session, memberships, org_id = await self.context(request)
        grants = []
        for m in memberships:
            for g in await self.store.list_grants_page(m.org.id, session["user_id"], None, 500):
                grants.append({"grant": g, "org": m.org.name, "since": rfc3339(g.created_at)})
        data = {"grants": grants, "section": "connected"}
        response = self.page(request, session, memberships, org_id, "dash_connected.html", data)
        return await self.respond(request, session, response)

    async def connected_revoke(self, request: web.Request) -> web.Response:
        session, _, _ = await self.context(request)
        await self.checked_form(request, session)
        grant = await self.store.get_grant(request.match_info["grant_id"])
        if grant is not None and grant.user_id == session["user_id"]:
            await self.api.apps.revoke_grant(grant.org_id, grant.id, session["user_id"])
        raise Redirect(f"{self.base}/connected")


SECTIONS: Final = frozenset({"keys", "apps", "connected", "usage", "webhooks"})


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


DASHBOARD: Final = web.AppKey("dashboard", Dashboard)


def page_view(name: str) -> View:
    """A dashboard method as a view; sign-in redirects and admin-only pages handled here."""

    async def view(request: web.Request) -> web.StreamResponse:
        try:
            target: Any = request.app[DASHBOARD]
            for part in name.split("."):  # "webhooks.view": the Webhooks page's view
                target = getattr(target, part)
            result: web.Response = await target(request)
        except Redirect as exc:
            return see_other(exc.location)
        except NotAdmin:
            return error_page(
                request, 403, "Not allowed", "Only an owner or admin of this organization can."
            )
        return result

    return view


def add_dashboard_routes(app: web.Application, settings: Settings) -> None:
    base = settings.dashboard.path
    pages: dict[str, dict[str, str]] = {
        "": {"GET": "home"},
        "/org": {"POST": "switch_org"},
        "/environment": {"POST": "switch_environment"},
        "/keys": {"GET": "keys_view", "POST": "key_create"},
        "/keys/{key_id}/rotate": {"POST": "key_rotate"},
        "/keys/{key_id}/revoke": {"POST": "key_revoke"},
        "/apps": {"GET": "apps_view", "POST": "app_create"},
        "/apps/{client_id}/secret": {"POST": "app_secret"},
        "/connected": {"GET": "connected_view"},
        "/connected/{grant_id}/revoke": {"POST": "connected_revoke"},
        "/usage": {"GET": "usage_page.view"},
        "/webhooks": {"GET": "webhooks.view", "POST": "webhooks.create"},
        "/webhooks/callbacks/{callback_id}/retry": {"POST": "webhooks.retry"},
        "/webhooks/{subscription_id}/secret": {"POST": "webhooks.rotate"},
        "/webhooks/{subscription_id}/enabled": {"POST": "webhooks.pause"},
        "/webhooks/{subscription_id}/delete": {"POST": "webhooks.delete"},
    }
    for path, methods in pages.items():
        table = {method: page_view(name) for method, name in methods.items()}
        add_endpoint(app, base + path, "dashboard:" + (path or "/"), table)
