"""Webhook delivery: at least once, off the request path, one node per attempt.

Every ``events.poll_interval`` seconds each worker claims due callbacks from the
store's outbox (``claim_callbacks``: PostgreSQL's ``FOR UPDATE SKIP LOCKED``, or
SQLite's single writer, so two workers or nodes never send the same attempt)
and POSTs each event as the Standard Webhooks specification describes. A 2xx
within ``TIMEOUT`` seconds is a delivery; anything else (another status, a
redirect, a timeout, a refused or unreachable target) is retried after the
next delay of ``events.retry_schedule``, with up to 10% jitter, until the
schedule runs out. A claim lasts ``LEASE`` seconds: a worker that dies
mid-attempt leaves the callback to be claimed again, so a restart loses none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime
from typing import Final

import aiohttp

from gateway.config.sections import Events
from gateway.events import signing
from gateway.events.targets import GuardedResolver, TargetRefused, check_url
from gateway.store import Store, StoreUnavailable
from gateway.store.records import Callback, Event, Outcome, Subscription

log = logging.getLogger("gateway.events")

TIMEOUT: Final = 10.0  # seconds for a receiver to answer 2xx
LEASE: Final = 30.0  # seconds a claimed callback is this worker's
BATCH: Final = 50  # callbacks claimed at a time
READ_LIMIT: Final = 64 * 1024  # bytes of a receiver's answer read (and dropped)


def payload(event: Event) -> bytes:
    """The body: ``{"type", "timestamp", "data"}``."""
    stamp = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds")
    body = {"type": event.type, "timestamp": stamp.replace("+00:00", "Z"),
            "data": json.loads(event.data)}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def in_force(sub: Subscription, now: float) -> list[str]:
    """The secrets that sign: the current one, and a rotated-out one in its grace."""
    previous = sub.previous_secret
    if previous is not None and sub.previous_until is not None and now < sub.previous_until:
        return [sub.secret, previous]
    return [sub.secret]


class Deliverer:
    def __init__(self, store: Store, settings: Events) -> None:
        self.store = store
        self.settings = settings
        self.http: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.settings.allow_private_targets), limit=BATCH
        )
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as self.http:
            while True:
                await asyncio.sleep(self.settings.poll_interval)
                try:
                    while await self.deliver_due() == BATCH:
                        pass
                except StoreUnavailable:
                    log.warning("webhook deliveries wait: the store is unreachable")
                except Exception:
                    log.exception("webhook delivery failed; trying again later")

    async def deliver_due(self) -> int:
        claimed = await self.store.claim_callbacks(time.time(), LEASE, BATCH)
        await asyncio.gather(*(self.deliver(c, s, e) for c, s, e in claimed))
        return len(claimed)

    async def deliver(self, callback: Callback, sub: Subscription, event: Event) -> None:
        outcome = await self.attempt(sub, event)
        retry_at = None
        schedule = self.settings.retry_schedule
        if not outcome.delivered and callback.attempt <= len(schedule):
            delay = schedule[callback.attempt - 1] * random.uniform(0.9, 1.1)
            retry_at = outcome.at + delay
        await self.store.finish_callback(callback, outcome, retry_at)

    async def attempt(self, sub: Subscription, event: Event) -> Outcome:
        assert self.http is not None
        now = time.time()
        body = payload(event)
        headers = signing.headers(in_force(sub, now), event.id, int(now), body)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            settings = self.settings
            check_url(sub.url, settings.allow_http, settings.allow_private_targets)
            async with self.http.post(
                sub.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                await response.content.read(READ_LIMIT)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TargetRefused as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {TIMEOUT:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency = (time.perf_counter() - started) * 1000
        return Outcome(status, error, round(latency, 1), time.time())
