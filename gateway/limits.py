"""Per-request limits: IP allowlists, rate limits and total quotas.

Order of checks for an authenticated request: allowed IPs (403), then the
rate limits of the credential and of its organization (429 with Retry-After and
RateLimit-* headers), then the credential's total quota (429). Config defaults
apply to every credential and organization; a key's own limits only tighten them.

Counting happens in this process (the `limits` library's fixed windows and an
in-memory quota tally flushed with usage); the scale-out issue moves the
counters to Redis so that several nodes share them.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from gateway.config import Limits as LimitSettings
from gateway.errors import GatewayError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressNotAllowed(GatewayError):
    status = 403
    code = "forbidden"
    message = "This credential may not be used from your address."

    @property
    def reason(self) -> str:
        return "ip_not_allowed"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"

    def __init__(self, limit: int, reset_in: int, scope: str) -> None:
        super().__init__(f"Rate limit of {limit} requests per minute exceeded for this {scope}.")
        self.limit = limit
        self.reset_in = reset_in

    def headers(self) -> Mapping[str, str]:
        return {
            "Retry-After": str(self.reset_in),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(self.reset_in),
        }


class QuotaExceeded(GatewayError):
    status = 429
    code = "quota_exceeded"

    def __init__(self, limit: int) -> None:
        super().__init__(f"This credential has used all of its {limit} requests.")


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
    def __init__(self, settings: LimitSettings) -> None:
        self.windows = FixedWindowRateLimiter(MemoryStorage())
        self.per_credential = settings.per_credential
        self.per_org = settings.per_org
        self._items: dict[int, RateLimitItem] = {}
        self.used: dict[str, int] = {}  # quota tally: credential id -> requests admitted

    def _item(self, per_minute: int) -> RateLimitItem:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    @staticmethod
    def check_address(limits: KeyLimits | None, client_ip: str | None) -> None:
        if (
            limits is not None
            and limits.allowed_ips
            and not address_allowed(limits.allowed_ips, client_ip)
        ):
            raise AddressNotAllowed()

    def admit(
        self, credential_id: str, org_id: str, limits: KeyLimits | None, already_used: int
    ) -> None:
        """Raise if a rate limit or the quota refuses this request; otherwise count it."""
        own_rate = limits.rate_limit if limits is not None else None
        rates = [r for r in (own_rate, self.per_credential) if r is not None]
        if rates:
            self._hit(min(rates), "cred", credential_id, "credential")
        if self.per_org is not None:
            self._hit(self.per_org, "org", org_id, "organization")
        if limits is not None and limits.max_requests is not None:
            used = max(self.used.get(credential_id, 0), already_used)
            if used >= limits.max_requests:
                raise QuotaExceeded(limits.max_requests)
            self.used[credential_id] = used + 1

    def _hit(self, per_minute: int, kind: str, key: str, scope: str) -> None:
        item = self._item(per_minute)
        if not self.windows.hit(item, kind, key):
            stats = self.windows.get_window_stats(item, kind, key)
            raise RateLimited(per_minute, max(1, math.ceil(stats.reset_time - time.time())), scope)
