"""Per-request limits: IP allowlists, rate limits and total quotas.

Order of checks for an authenticated request: allowed IPs (403), then the
rate limits of the credential and of its organization (429 with Retry-After and
RateLimit-* headers), then the credential's total quota (429). Config defaults
apply to every credential and organization; a key's own limits only tighten them.

Counting happens in the node's shared memory (exact across its workers) or, with
``redis.url``, in Redis shared by every node (``gateway.metering.counters``).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from limits.errors import StorageError
from redis.exceptions import RedisError

from gateway.config import Limits as LimitSettings
from gateway.errors import AddressNotAllowed, LimitsUnavailable, QuotaExceeded, RateLimited
from gateway.metering.counters import Counters
from gateway.wait import Wait

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
log = logging.getLogger("gateway.limits")
WARN_EVERY = 10.0  # seconds between warnings while the counters are down
COUNTER_FAILURES = (RedisError, StorageError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    max_requests: int | None = None
    rate_limit: int | None = None  # per minute
    allowed_ips: tuple[Network, ...] = ()

    @classmethod
    def of(
        cls, max_requests: int | None, rate_limit: int | None, allowed_ips: Iterable[str]
    ) -> KeyLimits | None:
        nets = tuple(ipaddress.ip_network(c, strict=False) for c in allowed_ips)
        if max_requests is None and rate_limit is None and not nets:
            return None
        return cls(max_requests, rate_limit, nets)


def address_allowed(nets: tuple[Network, ...], address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


class Limiter:
    """Applies the limits; what to do when the counters cannot be reached is
    ``redis.on_failure``: ``closed`` refuses with 503, ``open`` admits (logged,
    counted in ``gateway_limit_backend_failures_total``)."""

    def __init__(
        self,
        settings: LimitSettings,
        counters: Counters,
        *,
        fail_open: bool = False,
        on_failure: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.counters = counters
        self.configure(settings)
        self.fail_open = fail_open
        self.on_failure = on_failure
        self._last_warning = 0.0

    def configure(self, settings: LimitSettings) -> None:
        """At start, and on a reload."""
        self.per_credential = settings.per_credential
        self.per_org = settings.per_org

    @staticmethod
    def check_address(limits: KeyLimits | None, client_ip: str | None) -> None:
        if (
            limits is not None
            and limits.allowed_ips
            and not address_allowed(limits.allowed_ips, client_ip)
        ):
            raise AddressNotAllowed()

    def _plan(
        self, credential_id: str, org_id: str, limits: KeyLimits | None
    ) -> tuple[list[tuple[int, str, str, str]], int | None]:
        """What one request is counted against: (per minute, kind, key, scope) windows in
        order, and the key's total quota."""
        hits: list[tuple[int, str, str, str]] = []
        if limits is None and self.per_credential is None and self.per_org is None:
            return hits, None  # the common case: nothing to count
        own_rate = limits.rate_limit if limits is not None else None
        rates = [r for r in (own_rate, self.per_credential) if r is not None]
        if rates:
            hits.append((min(rates), "cred", credential_id, "credential"))
        if self.per_org is not None:
            hits.append((self.per_org, "org", org_id, "organization"))
        return hits, limits.max_requests if limits is not None else None

    def admit(
        self, credential_id: str, org_id: str, limits: KeyLimits | None, already_used: int
    ) -> Wait[None] | None:
        """Raise if a rate limit or the quota refuses this request; otherwise count it (a
        wait when the counters are in Redis)."""
        hits, quota = self._plan(credential_id, org_id, limits)
        if not hits and quota is None:
            return None
        counted = self._count(iter(hits), quota, credential_id, already_used)
        if counted is None:
            return None
        return Wait(self._reached(counted))

    def _count(
        self,
        hits: Iterator[tuple[int, str, str, str]],
        quota: int | None,
        credential_id: str,
        already_used: int,
    ) -> Wait[None] | None:
        """Each window in turn, then the quota; after a counter that waits, the rest
        continue once it has answered."""
        for per_minute, kind, key, scope in hits:
            wait = self.counters.hit(per_minute, kind, key)
            if isinstance(wait, Wait):
                return wait.then(
                    lambda w, p=per_minute, s=scope: self._counted_window(  # type: ignore[misc]
                        w, p, s, hits, quota, credential_id, already_used
                    )
                )
            if wait is not None:
                raise RateLimited(per_minute, wait, scope)
        if quota is None:
            return None
        taken = self.counters.take(credential_id, quota, already_used)
        if isinstance(taken, Wait):
            return taken.then(lambda t: self._counted_quota(t, quota))
        return self._counted_quota(taken, quota)

    def _counted_window(
        self,
        wait: int | None,
        per_minute: int,
        scope: str,
        hits: Iterator[tuple[int, str, str, str]],
        quota: int | None,
        credential_id: str,
        already_used: int,
    ) -> Wait[None] | None:
        if wait is not None:
            raise RateLimited(per_minute, wait, scope)
        return self._count(hits, quota, credential_id, already_used)

    @staticmethod
    def _counted_quota(taken: bool, quota: int) -> None:
        if not taken:
            raise QuotaExceeded(quota)

    async def _reached(self, counted: Wait[None]) -> None:
        try:
            await counted
        except COUNTER_FAILURES as exc:
            self._counters_failed(exc)

    def _counters_failed(self, exc: BaseException) -> None:
        outcome = "admitted" if self.fail_open else "refused"
        self.on_failure(outcome)
        now = time.monotonic()
        if now - self._last_warning > WARN_EVERY:
            self._last_warning = now
            log.warning("rate-limit counters unreachable (%s); requests %s",
                        type(exc).__name__, outcome)  # fmt: skip
        if not self.fail_open:
            raise LimitsUnavailable() from None
