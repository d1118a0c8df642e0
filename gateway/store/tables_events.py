"""Events, webhook subscriptions and their delivery attempts ("callbacks"): an
outbox (any SQL dialect).

An event is added in the transaction of the change that caused it, with one
pending callback for each subscription that wants it, so a crash between the
change and the delivery loses nothing. Nodes claim due callbacks for a while
(``claimed_until``); on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so that two
nodes never claim the same one, and on SQLite inside the single writer's
transaction.
"""

from __future__ import annotations

import secrets
from typing import Any

from gateway.store.records import Callback, Event, Outcome, Subscription
from gateway.store.rows import Rows
from gateway.store.sql import SqlBase

EVENT_COLUMNS = Rows(Event).columns
SUBSCRIPTIONS = Rows(Subscription)
CALLBACK_COLUMNS = Rows(Callback).columns
# What an update of a subscription writes.
CHANGEABLE = ("url", "events", "description", "secret", "previous_secret", "previous_until",
              "failing_since", "disabled_at")  # fmt: skip
DISABLE_AFTER = 5 * 86400.0  # seconds of nothing but failures before a subscription stops


def new_callback_id() -> str:
    return f"cb_{secrets.token_hex(8)}"


class EventTables(SqlBase):
    SKIP_LOCKED = ""  # the PostgreSQL driver's: " FOR UPDATE SKIP LOCKED"

    # --- events ---

    async def add_event(self, event: Event) -> bool:
        """Record ``event`` and a pending callback for each subscription that wants it;
        False (and nothing recorded) when an event with its ``once`` key exists."""
        async with self.transaction():
            added = await self._write(
                "INSERT INTO events (id, org_id, environment, type, data, at, once) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (once) DO NOTHING",
                (event.id, event.org_id, event.environment, event.type, event.data, event.at,
                 event.once),
            )  # fmt: skip
            if not added:
                return False
            wanting = await self._rows(
                "SELECT id FROM subscriptions WHERE org_id = ? AND environment = ? "
                "AND disabled_at IS NULL AND (' ' || events || ' ') LIKE ?",
                (event.org_id, event.environment, f"% {event.type} %"),
            )
            await self._write_many(
                "INSERT INTO callbacks (id, event_id, subscription_id, org_id, environment, "
                "event_type, attempt, status, due_at) VALUES (?, ?, ?, ?, ?, ?, 1, 'pending', ?)",
                [(new_callback_id(), event.id, sid, event.org_id, event.environment, event.type,
                  event.at) for (sid,) in wanting],
            )  # fmt: skip
        return True

    async def get_event(self, event_id: str) -> Event | None:
        rows = await self._rows(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        return Event(*rows[0]) if rows else None

    async def events_page(
        self, org_id: str, environment: str, before_seq: int | None, limit: int
    ) -> list[Event]:
        rows = await self._rows(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE org_id = ? AND environment = ? "
            "AND seq < ? ORDER BY seq DESC LIMIT ?",
            (org_id, environment, before_seq if before_seq is not None else 2**62, limit),
        )
        return [Event(*r) for r in rows]

    async def count_refusals(
        self, org_id: str, environment: str, minute: float, refusals: int
    ) -> int:
        """Add to an organization's refusals in one minute; the minute's total."""
        async with self.transaction():
            await self._write("DELETE FROM refusal_counts WHERE minute < ?", (minute - 3600,))
            await self._write(
                "INSERT INTO refusal_counts (org_id, environment, minute, refusals) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (org_id, environment, minute) "
                "DO UPDATE SET refusals = refusal_counts.refusals + excluded.refusals",
                (org_id, environment, minute, refusals),
            )
            rows = await self._rows(
                "SELECT refusals FROM refusal_counts WHERE org_id = ? AND environment = ? "
                "AND minute = ?",
                (org_id, environment, minute),
            )
        return int(rows[0][0])

    # --- subscriptions ---

    async def insert_subscription(self, sub: Subscription) -> None:
        await self._write(
            f"INSERT INTO subscriptions ({SUBSCRIPTIONS.columns}) VALUES ({SUBSCRIPTIONS.places})",
            SUBSCRIPTIONS.values(sub),
        )

    async def update_subscription(self, sub: Subscription) -> None:
        await self._write(
            f"UPDATE subscriptions SET {SUBSCRIPTIONS.assigned(*CHANGEABLE)} WHERE id = ?",
            (*SUBSCRIPTIONS.values(sub, *CHANGEABLE), sub.id),
        )

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        rows = await self._rows(
            f"SELECT {SUBSCRIPTIONS.columns} FROM subscriptions WHERE id = ?", (subscription_id,)
        )
        return SUBSCRIPTIONS.read(rows[0]) if rows else None

    async def list_subscriptions(self, org_id: str, environment: str) -> list[Subscription]:
        rows = await self._rows(
            f"SELECT {SUBSCRIPTIONS.columns} FROM subscriptions WHERE org_id = ? "
            "AND environment = ? ORDER BY created_at, id",
            (org_id, environment),
        )
        return [SUBSCRIPTIONS.read(r) for r in rows]

    async def delete_subscription(self, subscription_id: str) -> bool:
        async with self.transaction():
            await self._write(
                "DELETE FROM callbacks WHERE subscription_id = ? AND status = 'pending'",
                (subscription_id,),
            )
            deleted = await self._write(
                "DELETE FROM subscriptions WHERE id = ?", (subscription_id,)
            )
        return bool(deleted)

    # --- callbacks ---

    async def claim_callbacks(
        self, now: float, lease: float, limit: int
    ) -> list[tuple[Callback, Subscription, Event]]:
        """Due callbacks of enabled subscriptions, each claimed by this node for ``lease``
        seconds (another node takes it over after that, should this one die)."""
        async with self.transaction():
            rows = await self._rows(
                f"SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE status = 'pending' "
                "AND due_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
                "AND subscription_id IN (SELECT id FROM subscriptions WHERE disabled_at IS NULL) "
                f"ORDER BY due_at LIMIT ?{self.SKIP_LOCKED}",
                (now, now, limit),
            )
            await self._write_many(
                "UPDATE callbacks SET claimed_until = ? WHERE id = ?",
                [(now + lease, r[0]) for r in rows],
            )
        claimed = []
        for row in rows:
            callback = Callback(*row)
            sub = await self.get_subscription(callback.subscription_id)
            event = await self.get_event(callback.event_id)
            if sub is not None and event is not None:
                claimed.append((callback, sub, event))
        return claimed

    async def finish_callback(
        self, callback: Callback, outcome: Outcome, retry_at: float | None
    ) -> None:
        """Record an attempt; a failed one is tried again at ``retry_at`` (a new pending
        callback) unless it was the last. A subscription that has seen nothing but
        failures for five days is disabled."""
        delivered = outcome.delivered
        async with self.transaction():
            await self._write(
                "UPDATE callbacks SET status = ?, attempted_at = ?, http_status = ?, error = ?, "
                "latency_ms = ?, next_retry_at = ?, claimed_until = NULL WHERE id = ?",
                ("succeeded" if delivered else "failed", outcome.at, outcome.http_status,
                 outcome.error, outcome.latency_ms, None if delivered else retry_at,
                 callback.id),
            )  # fmt: skip
            if delivered:
                await self._write(
                    "UPDATE subscriptions SET failing_since = NULL WHERE id = ?",
                    (callback.subscription_id,),
                )
                return
            if retry_at is not None:
                await self._insert_attempt(callback, callback.attempt + 1, retry_at)
            await self._write(
                "UPDATE subscriptions SET failing_since = COALESCE(failing_since, ?) WHERE id = ?",
                (outcome.at, callback.subscription_id),
            )
            await self._write(
                "UPDATE subscriptions SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL "
                "AND failing_since <= ?",
                (outcome.at, callback.subscription_id, outcome.at - DISABLE_AFTER),
            )

    async def _insert_attempt(self, callback: Callback, attempt: int, due_at: float) -> str:
        new_id = new_callback_id()
        await self._write(
            "INSERT INTO callbacks (id, event_id, subscription_id, org_id, environment, "
            "event_type, attempt, status, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (new_id, callback.event_id, callback.subscription_id, callback.org_id,
             callback.environment, callback.event_type, attempt, due_at),
        )  # fmt: skip
        return new_id

    async def get_callback(self, callback_id: str) -> Callback | None:
        rows = await self._rows(
            f"SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = ?", (callback_id,)
        )
        return Callback(*rows[0]) if rows else None

    async def retry_callback(self, callback: Callback, at: float) -> Callback:
        """Deliver a callback's event once more, now (asked by a person)."""
        async with self.transaction():
            rows = await self._rows(
                "SELECT MAX(attempt) FROM callbacks WHERE event_id = ? AND subscription_id = ?",
                (callback.event_id, callback.subscription_id),
            )
            new_id = await self._insert_attempt(callback, int(rows[0][0] or 0) + 1, at)
        found = await self.get_callback(new_id)
        assert found is not None
        return found

    async def callbacks_page(
        self,
        org_id: str,
        environment: str,
        before_seq: int | None,
        limit: int,
        *,
        status: str | None = None,
        subscription_id: str | None = None,
        event_type: str | None = None,
    ) -> list[Callback]:
        where = ["org_id = ?", "environment = ?", "seq < ?"]
        params: list[Any] = [org_id, environment, before_seq if before_seq is not None else 2**62]
        for column, value in (("status", status), ("subscription_id", subscription_id),
                              ("event_type", event_type)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = await self._rows(
            f"SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT ?",
            (*params, limit),
        )
        return [Callback(*r) for r in rows]
