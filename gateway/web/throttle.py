"""Failed-login throttling per account and per client IP (moving windows).

Counted in process memory here; the scale-out issue moves the counters to Redis
so every node sees the same failures.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.config import Throttle


class LoginThrottle:
    def __init__(self, settings: Throttle) -> None:
        self.per_account = parse(settings.per_account)
        self.per_ip = parse(settings.per_ip)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def retry_after(self, email: str, ip: str) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""
        waits = []
        for item, key in ((self.per_account, ("acct", email)), (self.per_ip, ("ip", ip))):
            if not await self.limiter.test(item, *key):
                stats = await self.limiter.get_window_stats(item, *key)
                waits.append(max(1, math.ceil(stats.reset_time - time.time())))
        return max(waits) if waits else None

    async def failed(self, email: str, ip: str) -> None:
        await self.limiter.hit(self.per_account, "acct", email)
        await self.limiter.hit(self.per_ip, "ip", ip)
