"""last_used_at without a database write per request.

The hot path only records ``credential id -> time`` in a dict; a background
task writes the batch every ``usage.flush_interval`` seconds, and the app's
cleanup writes whatever is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.store import Store

log = logging.getLogger("gateway.usage")


class LastUsed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[str, float] = {}

    def seen(self, credential_id: str, at: float) -> None:
        self._pending[credential_id] = at

    async def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            await self.store.record_last_used(batch)
        except Exception as exc:  # keep the batch for the next flush
            log.warning("could not flush last_used_at: %s", type(exc).__name__)
            for key, at in batch.items():
                if self._pending.get(key, 0.0) < at:
                    self._pending[key] = at
            return 0
        return len(batch)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush()
