"""Events that come with time rather than with a request: a key's expiry drawing
near (7 days and 1 day before) and a key's quota used to 80% and in full.

Each worker scans; an event's ``once`` key (the key, the threshold, and the
expiry or quota it was about) makes the store record it once, whichever worker
or node saw it first. A key given a new expiry or quota is warned again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from gateway.events import key_event
from gateway.store import Store, StoreUnavailable

log = logging.getLogger("gateway.events")

EXPIRY_WARNINGS: Final = ((7, 7 * 86400.0), (1, 86400.0))  # (days, seconds) before
QUOTA_WARNING: Final = 0.8


class Scanner:
    def __init__(self, store: Store, expiry_interval: float, quota_interval: float) -> None:
        self.store = store
        self.expiry_interval = expiry_interval
        self.quota_interval = quota_interval

    async def run(self) -> None:
        next_expiry = 0.0
        while True:
            try:
                now = time.time()
                if now >= next_expiry:
                    await self.expiring(now)
                    next_expiry = now + self.expiry_interval
                await self.quotas()
            except StoreUnavailable:
                log.warning("event scan skipped: the store is unreachable")
            except Exception:
                log.exception("event scan failed")
            await asyncio.sleep(self.quota_interval)

    async def expiring(self, now: float) -> None:
        for days, ahead in EXPIRY_WARNINGS:
            for key in await self.store.keys_expiring(now, now + ahead):
                once = f"key.expiring:{key.id}:{days}d:{key.expires_at}"
                await self.store.add_event(key_event(key, "key.expiring", once, days=days))

    async def quotas(self) -> None:
        for key in await self.store.keys_near_quota(QUOTA_WARNING):
            assert key.max_requests is not None
            data = {"requests": key.request_count, "max_requests": key.max_requests}
            once = f"{key.id}:{key.max_requests}"
            await self.store.add_event(
                key_event(key, "quota.warning", f"quota.warning:{once}", **data)
            )
            if key.request_count >= key.max_requests:
                await self.store.add_event(
                    key_event(key, "quota.exhausted", f"quota.exhausted:{once}", **data)
                )
