"""The request pipeline, readable top to bottom:

normalize path -> match route -> authenticate -> authorize -> count
-> charge (metered routes) -> rewrite headers -> forward (stream both ways)

Each step is written once. A step that may wait (a credential not yet cached,
counters in Redis, a wallet debit) returns a ``Wait`` that the engine
(``gateway.http.call``) resumes; the others return at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.errors import UpgradeRefused
from gateway.exchange import Exchange
from gateway.metering.limits import Limiter
from gateway.metering.usage import UsageBook
from gateway.metering.wallet import Wallet, fingerprint
from gateway.pipeline.assertion import Assertions
from gateway.pipeline.authn import Authenticator, Principal
from gateway.pipeline.authz import require_scopes
from gateway.pipeline.headers import FieldView, ForwardedFor, Injected
from gateway.pipeline.paths import NormalPath, refuse_params
from gateway.pipeline.proxy import Forwarder
from gateway.pipeline.routes import CompiledRoute, Match, RouteTable
from gateway.store.records import KeptAnswer
from gateway.wait import Wait

Headers = list[tuple[str, str]]


def check_upgrade(route: CompiledRoute, method: str, upgrade: str) -> None:
    """A protocol upgrade is served only as a WebSocket handshake (RFC 6455 §4.1: GET,
    ``Upgrade: websocket``) on a route with ``websocket: true``."""
    if not route.websocket:
        raise UpgradeRefused()
    if method != "GET" or upgrade.lower() != "websocket":
        raise UpgradeRefused("Only a WebSocket handshake (GET, Upgrade: websocket) is accepted.")


# Made on every request: not frozen, whose __init__ costs about four times as much
# (object.__setattr__ per field). Nothing changes it once made.
@dataclass(slots=True)
class Admission:
    """A request that passed every check but the counted ones."""

    route: CompiledRoute
    path: NormalPath
    principal: Principal | None
    forwarded: Headers  # X-Forwarded-* for the upstream
    request_id: str
    upstream: str  # the target: the route's upstream, in the credential's environment


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
        assertions: Assertions | None = None,
    ) -> None:
        self.routes = routes
        self.assertions = assertions
        self.authenticator = authenticator
        self.forwarder = forwarder
        self.forwarded_for = forwarded_for
        self.limiter = limiter
        self.usage = usage
        self.wallet = wallet

    def match(self, method: str, segments: tuple[str, ...]) -> Match:
        return self.routes.decide(method, segments)

    def authorize(
        self,
        method: str,
        path: NormalPath,
        headers: FieldView,
        peer: str,
        scheme: str,
        exchange: Exchange,
        upgrade: str | None = None,
    ) -> Admission | Wait[Admission]:
        """Every check that needs no counting: route (404, 405), an upgrade it does not
        serve (400), credential (401), address and scopes (403). Nothing is written or
        counted."""
        route = self.match(method, path.segments).route
        exchange.route = route
        if upgrade is not None:
            check_upgrade(route, method, upgrade)
        refuse_params(path, route.path_params)
        exchange.client_ip, forwarded = self.forwarded_for.resolve(peer, scheme, headers)
        if route.public:
            return Admission(route, path, None, forwarded, exchange.request_id, route.upstream)
        principal = self.authenticator.authenticate(headers)
        if isinstance(principal, Wait):
            return principal.then(lambda p: self._admit(route, path, p, forwarded, exchange))
        return self._admit(route, path, principal, forwarded, exchange)

    def _admit(
        self,
        route: CompiledRoute,
        path: NormalPath,
        principal: Principal,
        forwarded: Headers,
        exchange: Exchange,
    ) -> Admission:
        exchange.principal = principal
        self.limiter.check_address(principal.limits, exchange.client_ip)
        require_scopes(route, principal)
        upstream = self.forwarder.target_for(route, principal.environment)
        return Admission(route, path, principal, forwarded, exchange.request_id, upstream)

    def count(self, admission: Admission) -> Injected | Wait[Injected]:
        """Apply rate limits and quotas (429) and note the key's use; the fields to add
        to the request upstream."""
        principal = admission.principal
        if principal is None:
            return self.injected(admission)
        # An organization's test traffic is limited apart from its live traffic.
        org = principal.org_id if principal.environment == "live" else principal.org_id + "#test"
        counted = self.limiter.admit(principal.credential_id, org,
                                     principal.limits, principal.request_count)  # fmt: skip
        if counted is not None:
            return counted.then(lambda _: self._counted(admission, principal))
        return self._counted(admission, principal)

    def _counted(self, admission: Admission, principal: Principal) -> Injected:
        if principal.method == "api_key":
            self.usage.key_used(principal.credential_id, time.time())
        return self.injected(admission)

    def injected(self, admission: Admission) -> Injected:
        """``identity`` as the upstream gets it, with X-Forwarded-*: the principal's
        lines made once, this request's own fields after them."""
        principal = admission.principal
        prepared = principal.identity_lines if principal is not None else b""
        return Injected(prepared, self._own_fields(admission) + admission.forwarded)

    def identity(self, admission: Admission) -> Headers:
        """Who the caller is, as the upstream (or a proxy asking for a decision) learns
        it (see README, 'Headers upstreams receive'): the principal's identity headers
        (``Principal.identity``), X-Request-Id, and the signed assertion when enabled."""
        principal = admission.principal
        return [*(principal.identity if principal is not None else ()),
                *self._own_fields(admission)]  # fmt: skip

    def _own_fields(self, admission: Admission) -> Headers:
        """This request's identity fields: X-Request-Id, and the assertion if enabled."""
        fields = [("X-Request-Id", admission.request_id)]
        if self.assertions is not None:
            fields.append(self.assertions.field(admission.principal, admission.route.upstream))
        return fields

    def charge(
        self, admission: Admission, method: str, idempotency_key: str | None
    ) -> Wait[int | KeptAnswer] | None:
        """A metered route's cost taken from the wallet (402); the debit to settle or
        refund once the upstream has answered, or a paid retry's kept answer. None on
        other routes."""
        route, principal, path = admission.route, admission.principal, admission.path
        if route.cost is None or principal is None:
            return None
        return Wait(self.wallet.charge(
            principal.org_id, principal.credential_id, route.name, route.cost,
            admission.request_id, idempotency_key,
            fingerprint(method, path.forward_path() + "?" + path.query), principal.environment,
        ))  # fmt: skip

    async def settle(
        self, debit: int, succeeded: bool, kept: KeptAnswer | None, exchange: Exchange
    ) -> None:
        """A charged call is paid only when the upstream answered with success and the
        client got the answer; otherwise it is refunded."""
        if succeeded:
            await self.wallet.settle(debit, kept)
            exchange.paid = True
        else:
            await self.wallet.refund(debit)
