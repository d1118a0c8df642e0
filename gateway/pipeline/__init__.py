"""The request pipeline, readable top to bottom:

normalize path -> match route -> authenticate -> authorize
-> rewrite headers -> forward (stream both ways)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from gateway.errors import MethodNotAllowed, NoRoute
from gateway.exchange import EXCHANGE, Exchange
from gateway.expect import send_continue
from gateway.limits import Limiter
from gateway.pipeline.authn import Authenticator, Principal
from gateway.pipeline.authz import require_scopes
from gateway.pipeline.headers import ForwardedFor
from gateway.pipeline.paths import NormalPath, normalize
from gateway.pipeline.proxy import Forwarder
from gateway.pipeline.routes import CompiledRoute, Match, RouteTable
from gateway.usage import UsageBook
from gateway.wallet import Wallet, fingerprint


def identity_headers(principal: Principal | None, request_id: str) -> list[tuple[str, str]]:
    """What the upstream learns about the caller (see README, 'Headers upstreams receive')."""
    headers = [("X-Request-Id", request_id)]
    if principal is not None:
        headers += principal.identity  # X-Org-Id, X-Scopes, ... (``Principal.identity``)
    return headers


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class Admission:
    """A request that passed every check but the counted ones."""

    route: CompiledRoute
    path: NormalPath
    principal: Principal | None
    forwarded: list[tuple[str, str]]  # X-Forwarded-* for the upstream
    request_id: str


class Pipeline:
    def __init__(
        self,
        routes: RouteTable,
        authenticator: Authenticator,
        forwarder: Forwarder,
        forwarded_for: ForwardedFor,
        limiter: Limiter,
        usage: UsageBook,
        wallet: Wallet,
    ) -> None:
        self.routes = routes
        self.authenticator = authenticator
        self.forwarder = forwarder
        self.forwarded_for = forwarded_for
        self.limiter = limiter
        self.usage = usage
        self.wallet = wallet

    def match(self, method: str, segments: tuple[str, ...]) -> Match:
        found = self.routes.match(method, segments)
        if found is None:
            allowed = self.routes.allowed_methods(segments)
            raise MethodNotAllowed(method, allowed) if allowed else NoRoute()
        return found

    def authorize_now(
        self,
        method: str,
        path: NormalPath,
        headers: MultiMapping[str],
        peer: str,
        scheme: str,
        exchange: Exchange,
    ) -> Admission | None:
        """``authorize`` where nothing needs waiting for; None when the credential is not
        cached (then ``authorize`` asks the store)."""
        route, forwarded = self._route(method, path, headers, peer, scheme, exchange)
        principal = None
        if not route.public:
            principal = self.authenticator.from_cache(headers)
            if principal is None:
                return None
        return self._admit(route, path, principal, forwarded, exchange)

    async def authorize(
        self,
        method: str,
        path: NormalPath,
        headers: MultiMapping[str],
        peer: str,
        scheme: str,
        exchange: Exchange,
    ) -> Admission:
        """Every check that needs no counting: path, route, credential, address, scopes.
        Nothing is written or counted, so a request refused here can be judged again."""
        route, forwarded = self._route(method, path, headers, peer, scheme, exchange)
        principal = None
        if not route.public:
            principal = await self.authenticator.authenticate(headers)
        return self._admit(route, path, principal, forwarded, exchange)

    def _route(
        self,
        method: str,
        path: NormalPath,
        headers: MultiMapping[str],
        peer: str,
        scheme: str,
        exchange: Exchange,
    ) -> tuple[CompiledRoute, list[tuple[str, str]]]:
        """The route (404, 405) and the X-Forwarded-* fields for the upstream."""
        route = self.match(method, path.segments).route
        exchange.route = route
        exchange.client_ip, forwarded = self.forwarded_for.resolve(peer, scheme, headers)
        return route, forwarded

    def _admit(
        self,
        route: CompiledRoute,
        path: NormalPath,
        principal: Principal | None,
        forwarded: list[tuple[str, str]],
        exchange: Exchange,
    ) -> Admission:
        """The caller's address and scopes checked (403)."""
        if principal is not None:
            exchange.principal = principal
            self.limiter.check_address(principal.limits, exchange.client_ip)
            require_scopes(route, principal)
        return Admission(route, path, principal, forwarded, exchange.request_id)

    def count_now(self, admission: Admission) -> list[tuple[str, str]] | None:
        """``count`` without waiting; None (nothing counted) when the limits live in Redis
        and the caller must ``await count`` instead."""
        principal = admission.principal
        if principal is not None:
            if not self.limiter.admit_now(principal.credential_id, principal.org_id,
                                          principal.limits, principal.request_count):  # fmt: skip
                return None
            self._used(principal)
        return identity_headers(principal, admission.request_id) + admission.forwarded

    async def count(self, admission: Admission) -> list[tuple[str, str]]:
        """Apply rate limits and quotas (429) and note the key's use; the headers to
        inject upstream."""
        principal = admission.principal
        if principal is not None:
            await self.limiter.admit(
                principal.credential_id,
                principal.org_id,
                principal.limits,
                principal.request_count,
            )
            self._used(principal)
        return identity_headers(principal, admission.request_id) + admission.forwarded

    def _used(self, principal: Principal) -> None:
        if principal.method == "api_key":
            self.usage.key_used(principal.credential_id, time.time())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        admission = await self.authorize(
            request.method,
            normalize(request.raw_path),
            request.headers,
            request.remote or "",
            request.scheme,
            exchange,
        )
        injected = await self.count(admission)
        route, path, principal = admission.route, admission.path, admission.principal
        debit = None
        idempotency_key = request.headers.get("Idempotency-Key")
        if route.cost is not None and principal is not None:
            debit = await self.wallet.charge(
                principal,
                route,
                exchange.request_id,
                idempotency_key,
                fingerprint(request.method, path.forward_path() + "?" + path.query),
            )
        await send_continue(request)
        if debit is None:
            return await self.forwarder.forward(request, route, path, injected)
        return await self.forward_paid(request, route, path, injected, debit, idempotency_key)

    async def forward_paid(
        self,
        request: web.Request,
        route: CompiledRoute,
        path: NormalPath,
        injected: list[tuple[str, str]],
        debit: int,
        idempotency_key: str | None,
    ) -> web.StreamResponse:
        """Forward a charged call; refund it unless the upstream answered with success."""
        try:
            response = await self.forwarder.forward(request, route, path, injected)
        except BaseException:
            # No answer reached the client (error, client gone, cancelled): not charged.
            await asyncio.shield(self.wallet.refund(debit))
            raise
        if response.status >= 400:
            await self.wallet.refund(debit)
        else:
            await self.wallet.settle(debit, idempotency_key)
            request[EXCHANGE].paid = True
        return response
