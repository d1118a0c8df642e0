"""Signing in with a password: the one gate every password check goes through (the
login page, and the legacy ``auth_string`` of the client-credentials grant).

Each attempt is counted against a moving window per account and one per client
address *before* the password is verified, in one atomic step of the `limits`
library (in process memory, or in Redis with ``redis.url`` so that every node
sees the same attempts). Counting after the slow Argon2 check let parallel
guesses through before the first failure was recorded. A successful sign-in
clears its account's window (not its address's: an attacker could otherwise
reset it by signing in to an account of their own), so the per-account limit
reads as "failures since the last success"; the per-address window counts every
attempt. At most one Argon2 verification per core runs at once, which also
bounds the memory that Argon2 takes. If Redis cannot be reached, sign-in is
refused (503) rather than let an attacker guess without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.accounts import users
from gateway.config import RedisSettings, Throttle
from gateway.errors import SignInThrottled, SignInUnavailable
from gateway.metering.limits import COUNTER_FAILURES
from gateway.store import Store
from gateway.store.records import User


class SignIn:
    def __init__(self, store: Store, settings: Throttle, redis: RedisSettings) -> None:
        self.store = store
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
        self.verifying = asyncio.Semaphore(os.cpu_count() or 1)

    async def check(self, email: str, password: str, ip: str) -> User | None:
        """The user whose password this is, or None; SignInThrottled (429) once a window
        is full, SignInUnavailable (503) when the counters cannot be reached."""
        email = email.strip().lower()
        try:
            for item, key in ((self.per_account, ("acct", email)), (self.per_ip, ("ip", ip))):
                if not await self.limiter.hit(item, *key):
                    raise SignInThrottled(await self._wait(item, key))
        except COUNTER_FAILURES:
            raise SignInUnavailable() from None
        async with self.verifying:
            user = await users.verify_login(self.store, email, password)
        if user is not None:
            # If the counters are gone, the window ends on its own; the sign-in stands.
            with contextlib.suppress(*COUNTER_FAILURES):
                await self.limiter.clear(self.per_account, "acct", email)
        return user

    async def _wait(self, item: RateLimitItem, key: tuple[str, str]) -> int:
        stats = await self.limiter.get_window_stats(item, *key)
        return max(1, math.ceil(stats.reset_time - time.time()))
