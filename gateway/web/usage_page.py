"""The dashboard's Usage page: requests per day by key and by route over the
last ``CHART_DAYS`` days, and the latest failed requests, in the environment
the Live/Test switch shows."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from aiohttp import web

from gateway.web.charts import daily_series, line_chart
from gateway.web.session import environment
from gateway.wire import rfc3339

if TYPE_CHECKING:
    from gateway.web.dashboard import Dashboard

CHART_DAYS: Final = 30
SHOWN_ERRORS: Final = 25


class UsagePage:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dash = dashboard

    async def view(self, request: web.Request) -> web.Response:
        dash = self.dash
        session, memberships, org_id = await dash.context(request)
        dash.admin_org(memberships, org_id)
        today = datetime.now(UTC).date()
        days = [(today - timedelta(days=CHART_DAYS - 1 - i)).isoformat() for i in range(CHART_DAYS)]
        await dash.usage.flush(dash.store)
        shown = environment(session)
        rows = await dash.store.usage(org_id, days[0], days[-1], shown)
        errors = await dash.store.errors_page(org_id, None, SHOWN_ERRORS, shown)
        names = {k.id: f"{k.name} ({k.prefix}…)" for k in await dash.store.list_api_keys(org_id)}
        tokens = {r.credential_id for r in rows} | {e.credential_id or "" for e in errors}
        apps = await dash.store.token_apps(sorted(t for t in tokens if t.startswith("tok_")))
        names |= {token: f"{app} (app)" for token, app in apps.items()}  # an app's tokens: one line
        per_key: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        per_route: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows:
            per_key[names.get(r.credential_id, r.credential_id)][r.day] += r.requests
            per_route[r.route][r.day] += r.requests
        data = {
            "section": "usage",
            "by_key": line_chart("Requests per day by key", days,
                                 daily_series(days, per_key, {})),
            "by_route": line_chart("Requests per day by route", days,
                                   daily_series(days, per_route, {})),
            "total": sum(r.requests for r in rows),
            "errors": [
                {"at": rfc3339(e.at), "route": e.route, "status": e.status, "reason": e.reason,
                 "credential": names.get(e.credential_id or "", e.credential_id or "-"),
                 "client_ip": e.client_ip or "-"}
                for e in errors
            ],
        }  # fmt: skip
        response = dash.page(request, session, memberships, org_id, "dash_usage.html", data)
        return await dash.respond(request, session, response)
