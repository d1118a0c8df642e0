"""Failed-login throttling per account and per client IP (moving windows).

Counted in process memory, or in Redis (``redis.url``) so that every node sees
the same failures. If Redis cannot be reached, logins are refused (503) rather
than let an attacker guess without limit.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.config import RedisSettings, Throttle
from gateway.metering.limits import COUNTER_FAILURES


class ThrottleUnavailable(Exception):
    """The shared counters cannot be reached: no login is checked without them."""


class LoginThrottle:
    def __init__(self, settings: Throttle, redis: RedisSettings) -> None:
        self.per_account = parse(settings.per_account)
        self.per_ip = parse(settings.per_ip)
        storage: Storage = MemoryStorage()
        if redis.url is not None:
            storage = RedisStorage(
                "async+" + redis.url,
                implementation="redispy",
                key_prefix="gateway:login",
                wrap_exceptions=True,
                socket_timeout=redis.timeout,
                socket_connect_timeout=redis.timeout,
            )
        self.limiter = MovingWindowRateLimiter(storage)

    async def retry_after(self, email: str, ip: str) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""
        try:
            return await self._retry_after(email, ip)
        except COUNTER_FAILURES:
            raise ThrottleUnavailable() from None

    async def _retry_after(self, email: str, ip: str) -> int | None:
        waits = []
        for item, key in ((self.per_account, ("acct", email)), (self.per_ip, ("ip", ip))):
            if not await self.limiter.test(item, *key):
                stats = await self.limiter.get_window_stats(item, *key)
                waits.append(max(1, math.ceil(stats.reset_time - time.time())))
        return max(waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        try:
            await self.limiter.hit(self.per_account, "acct", email)
            await self.limiter.hit(self.per_ip, "ip", ip)
        except COUNTER_FAILURES:
            raise ThrottleUnavailable() from None
