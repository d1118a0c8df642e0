"""Who may use the management API, and for which organization.

Two ways in:
- a credential (API key or OAuth token) carrying the built-in scope
  ``gateway:admin``: it acts for its own organization, under its own limits;
- a dashboard session of a user who is ``owner`` or ``admin`` of the
  organization picked in the dashboard. Cookie-authenticated writes must echo
  the session's CSRF token in ``X-CSRF-Token``.

Everything is confined to that one organization.
"""

from __future__ import annotations

from aiohttp import web

from gateway.accounts.users import ADMIN_ROLES
from gateway.config import ADMIN_SCOPE
from gateway.errors import BadCsrf, InsufficientScope, NotAnAdmin, Unauthorized
from gateway.manage.common import Caller
from gateway.metering.limits import Limiter
from gateway.pipeline.authn import Authenticator
from gateway.pipeline.headers import ForwardedFor
from gateway.store import Store
from gateway.wait import resolved
from gateway.web.middleware import EXCHANGE, client_address
from gateway.web.session import Sessions, csrf_ok

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key", "access_token")


class ManagementAuth:
    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        limiter: Limiter,
        sessions: Sessions,
        forwarded_for: ForwardedFor,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.limiter = limiter
        self.sessions = sessions
        self.forwarded_for = forwarded_for

    async def caller(self, request: web.Request) -> Caller:
        request[EXCHANGE].client_ip = client_address(self.forwarded_for, request)
        if any(h in request.headers for h in CREDENTIAL_HEADERS):
            return await self._by_credential(request)
        return await self._by_session(request)

    async def _by_credential(self, request: web.Request) -> Caller:
        principal = await resolved(self.authenticator.authenticate(request.headers))
        exchange = request[EXCHANGE]
        exchange.principal = principal
        self.limiter.check_address(principal.limits, exchange.client_ip)
        if ADMIN_SCOPE not in principal.scopes:
            raise InsufficientScope(ADMIN_SCOPE, (ADMIN_SCOPE,))
        await resolved(
            self.limiter.admit(
                principal.credential_id, principal.org_id, principal.limits, principal.request_count
            )
        )
        return Caller(org_id=principal.org_id, credential_id=principal.credential_id)

    async def _by_session(self, request: web.Request) -> Caller:
        session = await self.sessions.load(request)
        user_id = session.get("user_id")
        if not isinstance(user_id, str):
            raise Unauthorized("missing")
        memberships = await self.store.memberships(user_id)
        admin_of = [m.org.id for m in memberships if m.role in ADMIN_ROLES]
        chosen = session.get("org_id")
        org_id = chosen if isinstance(chosen, str) else (admin_of[0] if admin_of else None)
        if org_id is None or org_id not in admin_of:
            raise NotAnAdmin()
        if request.method not in SAFE_METHODS and not csrf_ok(
            session, request.headers.get("X-CSRF-Token")
        ):
            raise BadCsrf()
        return Caller(org_id=org_id, user_id=user_id)
