"""Events seen on the request path, gathered in memory and written in the
background (the request path writes nothing): ``rate_limit.exceeded`` (at
most one per credential per minute) and ``auth.failures_spike`` (more than
``events.auth_failures_spike`` refusals, 401 or 403, for one organization in
one minute, counted across workers and nodes in the store).

Only refusals of a credential the gateway recognized count towards a spike: an
unknown key belongs to no organization.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from gateway.events import new_event
from gateway.store import Store, StoreUnavailable
from gateway.store.records import ErrorRow

log = logging.getLogger("gateway.events")

Scope = tuple[str, str]  # organization, environment


class Signals:
    def __init__(self, spike: int) -> None:
        self.spike = spike
        self.limited: dict[str, tuple[str, str, int]] = {}  # credential -> org, env, minute
        self.refused: Counter[tuple[str, str, int]] = Counter()  # (org, env, minute)

    def watch(self, failures: list[ErrorRow]) -> None:
        """The failed requests a usage flush is writing (``UsageBook.watch``)."""
        for failure in failures:
            minute = int(failure.at // 60)
            if failure.status == 429 and failure.reason == "rate_limited":
                if failure.credential_id:
                    key = (failure.org_id, failure.environment, minute)
                    self.limited[failure.credential_id] = key
            elif failure.status in (401, 403):
                self.refused[(failure.org_id, failure.environment, minute)] += 1

    async def flush(self, store: Store) -> None:
        limited, self.limited = self.limited, {}
        refused, self.refused = self.refused, Counter()
        try:
            await self._write(store, limited, refused)
        except BaseException:
            self.limited = {**limited, **self.limited}  # kept for the next flush
            self.refused.update(refused)
            raise

    async def _write(
        self,
        store: Store,
        limited: dict[str, tuple[str, str, int]],
        refused: Counter[tuple[str, str, int]],
    ) -> None:
        for credential_id, (org_id, environment, minute) in limited.items():
            data = {"credential_id": credential_id, "minute": minute * 60}
            once = f"rate_limit.exceeded:{credential_id}:{minute}"
            await store.add_event(
                new_event(org_id, environment, "rate_limit.exceeded", data, once=once)
            )
        for (org_id, environment, minute), count in refused.items():
            total = await store.count_refusals(org_id, environment, minute * 60, count)
            if total > self.spike:
                data = {"refusals": total, "minute": minute * 60, "threshold": self.spike}
                once = f"auth.failures_spike:{org_id}:{environment}:{minute}"
                await store.add_event(
                    new_event(org_id, environment, "auth.failures_spike", data, once=once)
                )

    async def run(self, store: Store, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush(store)
            except StoreUnavailable:
                log.warning("request events wait: the store is unreachable")
            except Exception:
                log.exception("writing request events failed")
