"""The dashboard's Webhooks page: an organization's subscriptions in the
environment the Live/Test switch shows, a form to add one (its secret shown
once), and the latest delivery attempts with a button to send one again. The
work is the management API's (``gateway.manage.event_endpoints``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp_session import Session
from multidict import MultiMapping

from gateway.errors import ApiError
from gateway.events import EVENT_TYPES
from gateway.manage.common import validate
from gateway.manage.event_endpoints import EventsApi
from gateway.manage.schemas import SubscriptionCreate, SubscriptionPatch
from gateway.web.session import REVEAL, environment
from gateway.wire import callback_json, event_json, rfc3339, subscription_json

if TYPE_CHECKING:
    from gateway.web.dashboard import Dashboard

SHOWN_ATTEMPTS: Final = 25
Form = MultiMapping[Any]
Done = dict[str, Any] | None  # what an action made (a new secret, to show once)


class WebhooksPage:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dash = dashboard

    async def view(self, request: web.Request, *, error: str | None = None) -> web.Response:
        dash = self.dash
        session, memberships, org_id = await dash.context(request)
        org_id = dash.admin_org(memberships, org_id)
        shown = environment(session)
        subs = await dash.store.list_subscriptions(org_id, shown)
        attempts = await dash.store.callbacks_page(org_id, shown, None, SHOWN_ATTEMPTS)
        events = await dash.store.events_page(org_id, shown, None, SHOWN_ATTEMPTS)
        data = {
            "section": "webhooks",
            "subscriptions": [subscription_json(s) for s in subs],
            "attempts": [
                {**callback_json(c), "when": rfc3339(c.attempted_at or c.due_at)} for c in attempts
            ],
            "events": [{**event_json(e), "data": e.data} for e in events],  # as sent
            "event_types": EVENT_TYPES,
            "shown": session.pop(REVEAL, {}).get("webhooks"),
            "error": error,
        }
        response = dash.page(request, session, memberships, org_id, "dash_webhooks.html", data,
                             status=400 if error else 200)  # fmt: skip
        return await dash.respond(request, session, response)

    async def create(self, request: web.Request) -> web.Response:
        async def subscribe(org: str, form: Form, session: Session) -> Done:
            body = validate(SubscriptionCreate, {
                "url": str(form.get("url", "")).strip(),
                "events": [str(e) for e in form.getall("events", [])],
                "description": str(form.get("description", "")),
                "environment": environment(session),
            })  # fmt: skip
            return await self.api.subscribe(org, body)

        return await self.act(request, subscribe)

    async def retry(self, request: web.Request) -> web.Response:
        callback_id = request.match_info["callback_id"]
        return await self.act(request, lambda org, _, __: self.api.retry_one(org, callback_id))

    async def rotate(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["subscription_id"]
        return await self.act(request, lambda org, _, __: self.api.rotate_secret(org, sub_id))

    async def pause(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["subscription_id"]

        def change(org: str, form: Form, _: Session) -> Awaitable[Done]:
            wanted = SubscriptionPatch(enabled=form.get("enabled") == "true")
            return self.api.change(org, sub_id, wanted)

        return await self.act(request, change)

    async def delete(self, request: web.Request) -> web.Response:
        sub_id = request.match_info["subscription_id"]
        return await self.act(request, lambda org, _, __: self.api.remove(org, sub_id))

    async def act(
        self, request: web.Request, action: Callable[[str, Form, Session], Awaitable[Done]]
    ) -> web.Response:
        """A form of this page: checked, done for the organization (given the form and
        the session, read once), back to the page, with a new signing secret shown once
        if the action made one."""
        dash = self.dash
        session, memberships, org_id = await dash.context(request)
        try:
            form = await dash.checked_form(request, session)
            done = await action(dash.admin_org(memberships, org_id), form, session)
        except ApiError as exc:
            return await self.view(request, error=exc.message)
        if done is not None and "secret" in done:
            return await dash.reveal(request, session, "webhooks", url=done["url"],
                                     secret=done["secret"])  # fmt: skip
        return web.Response(status=303, headers={"Location": f"{dash.base}/webhooks"})

    @property
    def api(self) -> EventsApi:
        return self.dash.api.events
