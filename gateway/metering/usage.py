"""Usage without a database write per request.

The hot path only updates dicts in memory: last_used_at and request counts per
API key, request/error tallies per (organization, day, credential, route,
status, client address), and the latest failed requests. A background task
writes the batch every ``usage.flush_interval`` seconds and the app's cleanup
writes whatever is left, so a clean shutdown loses nothing. If the database is
down, the batch is kept and retried (errors beyond ``MAX_PENDING_ERRORS`` are
dropped oldest first; tallies are merged, so they cannot grow without bound
beyond the number of distinct rows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from gateway.store import Store
from gateway.store.records import ErrorRow, UsageRow

log = logging.getLogger("gateway.usage")
MAX_PENDING_ERRORS = 10_000
KEEP_ERRORS = 100_000  # rows kept in the request_errors table, across organizations

RowKey = tuple[str, str, str, str, int, str, str]  # org, day, credential, route, status, ip, env


class UsageBook:
    def __init__(self) -> None:
        self.last_used: dict[str, float] = {}
        self.key_requests: Counter[str] = Counter()
        self.tallies: dict[RowKey, list[int]] = {}
        self.errors: list[ErrorRow] = []
        self._day = (-1, "")
        # Told of each batch of failed requests as it is written (``gateway.events``).
        self.watch: Callable[[list[ErrorRow]], None] | None = None

    def day(self, now: float) -> str:
        number = int(now // 86400)
        if self._day[0] != number:
            self._day = (number, time.strftime("%Y-%m-%d", time.gmtime(now)))
        return self._day[1]

    def key_used(self, key_id: str, now: float) -> None:
        self.last_used[key_id] = now
        self.key_requests[key_id] += 1

    def decided(
        self,
        *,
        org_id: str,
        credential_id: str,
        route: str,
        status: int,
        client_ip: str,
        now: float,
        environment: str = "live",
        paid: bool = False,
        failure: tuple[str, str, str] | None = None,  # (request id, method, reason)
    ) -> None:
        """Count one request the gateway decided for an organization."""
        key = (org_id, self.day(now), credential_id, route, status, client_ip, environment)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = [0, 0, 0]
        tally[0] += 1
        if status >= 400:
            tally[1] += 1
        if paid:
            tally[2] += 1
        if failure is not None:
            request_id, method, reason = failure
            self.errors.append(
                ErrorRow(org_id, now, request_id, method, route, status, reason,
                         credential_id or None, client_ip or None, environment=environment)
            )  # fmt: skip
            if len(self.errors) > MAX_PENDING_ERRORS:
                del self.errors[: len(self.errors) - MAX_PENDING_ERRORS]

    async def flush(self, store: Store) -> None:
        last_used, self.last_used = self.last_used, {}
        counts, self.key_requests = self.key_requests, Counter()
        tallies, self.tallies = self.tallies, {}
        errors, self.errors = self.errors, []
        try:
            if last_used or counts:
                await store.record_last_used(last_used, dict(counts))
                last_used, counts = {}, Counter()
            if tallies:
                await store.add_usage([
                    UsageRow(org, day, credential, route, status, ip, n, errs, paid, env)
                    for (org, day, credential, route, status, ip, env), (n, errs, paid)
                    in tallies.items()
                ])  # fmt: skip
                tallies = {}
            if errors:
                await store.add_errors(errors, KEEP_ERRORS)
                if self.watch is not None:  # once written: a batch kept for later is not told twice
                    self.watch(errors)
                errors = []
        except Exception as exc:  # keep what was not written for the next flush
            log.warning("could not flush usage: %s", type(exc).__name__)
            self._merge_back(last_used, counts, tallies, errors)

    def _merge_back(
        self,
        last_used: dict[str, float],
        counts: Counter[str],
        tallies: dict[RowKey, list[int]],
        errors: list[ErrorRow],
    ) -> None:
        for key_id, at in last_used.items():
            self.last_used[key_id] = max(at, self.last_used.get(key_id, 0.0))
        self.key_requests.update(counts)
        for key, values in tallies.items():
            mine = self.tallies.setdefault(key, [0, 0, 0])
            for i, v in enumerate(values):
                mine[i] += v
        self.errors[:0] = errors[-MAX_PENDING_ERRORS:]

    async def run(self, store: Store, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush(store)
