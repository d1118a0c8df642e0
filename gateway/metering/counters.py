"""Where requests are counted: in the node's shared memory
(``gateway.node.shared.NodeCounters``: exact across the node's workers), or in
Redis shared by every node (``RedisCounters``).

Rate limits use the `limits` library's fixed windows on Redis, and its moving
windows for the login throttle. Quotas use one Lua script, so a check and its
increment are atomic across nodes. If Redis restarts, what is lost is at most
the current one-minute window of each rate limit; a quota counter is seeded
again from the database's request count, which lags by at most
``usage.flush_interval`` seconds of traffic.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.asyncio import Redis

from gateway.wait import Wait

QUOTA_TTL = 30 * 86400  # an idle quota counter is forgotten (and reseeded) after this
# KEYS[1] = counter; ARGV = seed from the database, limit, ttl. Returns 1 if taken, 0 if full.
TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
local used = tonumber(redis.call('GET', KEYS[1]))
if used >= tonumber(ARGV[2]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class Counters(Protocol):
    """Where requests are counted: this process, or Redis shared by every node. Counting
    in this process never waits; Redis answers with a ``Wait``."""

    def hit(self, per_minute: int, kind: str, key: str) -> int | Wait[int | None] | None:
        """Count one request in the current minute; None if allowed, else seconds to wait."""
        ...

    def take(self, credential_id: str, limit: int, already_used: int) -> bool | Wait[bool]:
        """Count one request against a total quota; False once ``limit`` is reached."""
        ...

    def attempt(
        self, limit: int, period: int, kind: str, key: str
    ) -> int | Wait[int | None] | None:
        """Count one attempt in a window of ``period`` seconds that slides (the login
        throttle); None if allowed, else seconds to wait."""
        ...

    def clear(self, limit: int, period: int, kind: str, key: str) -> Wait[None] | None:
        """Forget the attempts counted for (kind, key) in that window."""
        ...

    async def close(self) -> None: ...


class RedisCounters:
    def __init__(self, url: str, timeout: float, prefix: str = "gateway") -> None:
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self.prefix = prefix
        self.redis = Redis.from_url(url, **options)  # type: ignore[arg-type]
        storage_url = "async+" + url if not url.startswith("async+") else url
        self.storage = RedisStorage(
            storage_url,
            implementation="redispy",
            key_prefix=f"{prefix}:rl",
            wrap_exceptions=True,
            **options,
        )
        self.windows = FixedWindowRateLimiter(self.storage)
        self.sliding = MovingWindowRateLimiter(self.storage)
        self._take = self.redis.register_script(TAKE)
        self._items: dict[int, RateLimitItem] = {}

    def _item(self, per_minute: int) -> RateLimitItem:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    def hit(self, per_minute: int, kind: str, key: str) -> Wait[int | None]:
        return Wait(self._hit(per_minute, kind, key))

    async def _hit(self, per_minute: int, kind: str, key: str) -> int | None:
        item = self._item(per_minute)
        if await self.windows.hit(item, kind, key):
            return None
        stats = await self.windows.get_window_stats(item, kind, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def take(self, credential_id: str, limit: int, already_used: int) -> Wait[bool]:
        return Wait(self._take_one(credential_id, limit, already_used))

    async def _take_one(self, credential_id: str, limit: int, already_used: int) -> bool:
        key = f"{self.prefix}:quota:{credential_id}"
        taken = await self._take(keys=[key], args=[already_used, limit, QUOTA_TTL])
        return bool(taken)

    def attempt(self, limit: int, period: int, kind: str, key: str) -> Wait[int | None]:
        return Wait(self._attempt(RateLimitItemPerSecond(limit, period), kind, key))

    async def _attempt(self, item: RateLimitItem, kind: str, key: str) -> int | None:
        if await self.sliding.hit(item, kind, key):
            return None
        stats = await self.sliding.get_window_stats(item, kind, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def clear(self, limit: int, period: int, kind: str, key: str) -> Wait[None]:
        return Wait(self.sliding.clear(RateLimitItemPerSecond(limit, period), kind, key))

    async def close(self) -> None:
        await self.redis.aclose()
