"""Wallets: balances never below zero, every change recorded (any SQL dialect)."""

from __future__ import annotations

import base64
import json
import secrets

from gateway.store.records import Conflict, Debit, Event, KeptAnswer, WalletEntry
from gateway.store.tables_events import EventTables

ENTRY_COLUMNS = (
    "seq, org_id, amount, balance_after, kind, at, request_id, credential_id, route, note"
)


IDEMPOTENCY_WINDOW = 86400.0  # seconds an Idempotency-Key is remembered
PENDING, SUCCEEDED, REFUNDED = 0, 1, -1  # wallet_transactions.settled of a debit


class DebitRefused(Exception):
    """Rolls back a debit transaction; carries the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WalletTables(EventTables):  # a debit may record a wallet.low event
    async def wallet_credit(
        self, org_id: str, amount: int, note: str | None, at: float, environment: str = "live"
    ) -> int:
        async with self.transaction():
            await self._write(
                "INSERT INTO wallets (org_id, environment, balance) VALUES (?, ?, ?) "
                "ON CONFLICT (org_id, environment) "
                "DO UPDATE SET balance = wallets.balance + excluded.balance",
                (org_id, environment, amount),
            )
            balance = await self.wallet_balance(org_id, environment)
            await self._write(
                "INSERT INTO wallet_transactions (org_id, environment, amount, balance_after, "
                "kind, note, at) VALUES (?, ?, ?, ?, 'credit', ?, ?)",
                (org_id, environment, amount, balance, note, at),
            )
        return balance

    async def wallet_balance(self, org_id: str, environment: str = "live") -> int:
        rows = await self._rows(
            "SELECT balance FROM wallets WHERE org_id = ? AND environment = ?",
            (org_id, environment),
        )
        return int(rows[0][0]) if rows else 0

    async def wallet_debit(
        self,
        org_id: str,
        credential_id: str,
        cost: int,
        *,
        request_id: str,
        route: str,
        idempotency_key: str | None,
        fingerprint: str | None,
        holder: str,
        at: float,
        environment: str = "live",
    ) -> Debit:
        try:
            async with self.transaction():
                if idempotency_key is not None:
                    paid = await self._already_paid(
                        org_id, credential_id, idempotency_key, fingerprint, at
                    )
                    if paid is not None:
                        return Debit(seq=None, kept=await self._kept_answer(paid))
                await self._take_from_key(credential_id, cost)
                taken = await self._write(
                    "UPDATE wallets SET balance = balance - ? WHERE org_id = ? "
                    "AND environment = ? AND balance >= ?",
                    (cost, org_id, environment, cost),
                )
                if not taken:
                    raise DebitRefused("insufficient_funds")
                (balance, threshold), *_ = await self._rows(
                    "SELECT balance, low_balance_threshold FROM wallets "
                    "WHERE org_id = ? AND environment = ?",
                    (org_id, environment),
                )
                if threshold is not None and balance < threshold <= balance + cost:
                    await self._low_balance(org_id, environment, balance, threshold, at)
                try:
                    rows = await self._rows(
                        "INSERT INTO wallet_transactions (org_id, environment, amount, "
                        "balance_after, kind, request_id, credential_id, route, idempotency_key, "
                        "fingerprint, holder, at) "
                        "VALUES (?, ?, ?, ?, 'debit', ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                        (org_id, environment, -cost, balance, request_id, credential_id, route,
                         idempotency_key, fingerprint, holder, at),
                    )  # fmt: skip
                except Conflict:
                    # Another node charged the same idempotency key a moment ago.
                    raise DebitRefused("idempotency_in_progress") from None
        except DebitRefused as exc:
            return Debit(seq=None, refused=exc.reason)
        return Debit(seq=int(rows[0][0]))

    async def set_low_balance_threshold(
        self, org_id: str, environment: str, threshold: int | None
    ) -> None:
        await self._write(
            "INSERT INTO wallets (org_id, environment, balance, low_balance_threshold) "
            "VALUES (?, ?, 0, ?) ON CONFLICT (org_id, environment) "
            "DO UPDATE SET low_balance_threshold = excluded.low_balance_threshold",
            (org_id, environment, threshold),
        )

    async def _low_balance(
        self, org_id: str, environment: str, balance: int, threshold: int, at: float
    ) -> None:
        """A debit took the balance under the organization's threshold: the wallet.low
        event, in the debit's transaction."""
        data = json.dumps({"balance": balance, "low_balance_threshold": threshold})
        await self.add_event(Event(f"evt_{secrets.token_hex(8)}", org_id, environment,
                                   "wallet.low", data, at))  # fmt: skip

    async def _already_paid(
        self, org_id: str, credential_id: str, key: str, fingerprint: str | None, at: float
    ) -> int | None:
        """The debit of the call that succeeded, for its retry; refuses a key reused for
        another request, or while the first call is still in flight."""
        prior = await self._rows(
            "SELECT seq, fingerprint, settled, at FROM wallet_transactions WHERE org_id = ? "
            "AND credential_id = ? AND idempotency_key = ? AND kind = 'debit'",
            (org_id, credential_id, key),
        )
        if not prior:
            return None
        seq, first_fingerprint, settled, first_at = prior[0]
        if first_at < at - IDEMPOTENCY_WINDOW:
            await self._write(
                "UPDATE wallet_transactions SET idempotency_key = NULL WHERE seq = ?", (seq,)
            )
            return None
        if first_fingerprint != fingerprint:
            raise DebitRefused("idempotency_mismatch")
        if settled != SUCCEEDED:
            raise DebitRefused("idempotency_in_progress")
        return int(seq)

    async def _kept_answer(self, debit_seq: int) -> KeptAnswer:
        rows = await self._rows(
            "SELECT body_digest, status, reason, headers, body FROM kept_answers "
            "WHERE debit_seq = ?",
            (debit_seq,),
        )
        if not rows:  # settled before answers were kept: nothing to replay
            return KeptAnswer(body_digest=None, status=0, reason="", headers=[], body=None)
        body_digest, status, reason, headers, body = rows[0]
        return KeptAnswer(
            body_digest=body_digest,
            status=int(status),
            reason=reason,
            headers=[(str(n), str(v)) for n, v in json.loads(headers)],
            body=base64.b64decode(body) if body is not None else None,
        )

    async def wallet_settle(self, debit_seq: int, kept: KeptAnswer | None, at: float) -> None:
        """Mark the call succeeded and keep its answer, if it has one to keep; answers
        past the idempotency window are dropped on the way."""
        if kept is None:
            await self._write(
                "UPDATE wallet_transactions SET settled = ? WHERE seq = ?", (SUCCEEDED, debit_seq)
            )
            return
        body = base64.b64encode(kept.body).decode("ascii") if kept.body is not None else None
        async with self.transaction():
            await self._write(
                "UPDATE wallet_transactions SET settled = ? WHERE seq = ?", (SUCCEEDED, debit_seq)
            )
            await self._write("DELETE FROM kept_answers WHERE at < ?", (at - IDEMPOTENCY_WINDOW,))
            await self._write(
                "INSERT INTO kept_answers (debit_seq, body_digest, status, reason, headers, "
                "body, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (debit_seq, kept.body_digest, kept.status, kept.reason,
                 json.dumps(kept.headers), body, at),
            )  # fmt: skip

    async def _take_from_key(self, credential_id: str, cost: int) -> None:
        """Count the paid call against the key's caps (keys only; tokens have none).

        One conditional UPDATE, so two nodes charging the same key cannot both pass
        a cap that only one more call fits under."""
        counted = await self._write(
            "UPDATE api_keys SET paid_requests = paid_requests + 1, spent = spent + ? "
            "WHERE id = ? AND (max_paid_requests IS NULL OR paid_requests < max_paid_requests) "
            "AND (max_spend IS NULL OR spent + ? <= max_spend)",
            (cost, credential_id, cost),
        )
        if counted:
            return
        rows = await self._rows(
            "SELECT max_paid_requests, paid_requests FROM api_keys WHERE id = ?",
            (credential_id,),
        )
        if not rows:
            return  # not an API key: an OAuth token has no caps
        max_paid, paid = rows[0]
        raise DebitRefused(
            "max_paid_requests" if max_paid is not None and paid >= max_paid else "max_spend"
        )

    async def wallet_refund(self, debit_seq: int, at: float) -> None:
        """Give a debit back, once: the debit is marked refunded in the same transaction,
        and its idempotency key forgotten (the call failed, so its retry is charged)."""
        async with self.transaction():
            marked = await self._write(
                "UPDATE wallet_transactions SET settled = ?, idempotency_key = NULL "
                "WHERE seq = ? AND kind = 'debit' AND settled = ?",
                (REFUNDED, debit_seq, PENDING),
            )
            if not marked:
                return  # unknown, succeeded, or refunded already
            rows = await self._rows(
                "SELECT org_id, environment, amount, credential_id, request_id, route "
                "FROM wallet_transactions WHERE seq = ?",
                (debit_seq,),
            )
            org_id, environment, amount, credential_id, request_id, route = rows[0]
            cost = -int(amount)
            await self._write(
                "UPDATE wallets SET balance = balance + ? WHERE org_id = ? AND environment = ?",
                (cost, org_id, environment),
            )
            await self._write(
                "UPDATE api_keys SET paid_requests = paid_requests - 1, spent = spent - ? "
                "WHERE id = ?",
                (cost, credential_id),
            )
            balance = await self.wallet_balance(org_id, environment)
            await self._write(
                "INSERT INTO wallet_transactions (org_id, environment, amount, balance_after, "
                "kind, request_id, credential_id, route, note, at) "
                "VALUES (?, ?, ?, ?, 'refund', ?, ?, ?, 'the call did not succeed', ?)",
                (org_id, environment, cost, balance, request_id, credential_id, route, at),
            )

    async def wallet_release(self, holder: str, at: float) -> int:
        """Refund every debit still pending whose holder is ``holder`` or, for a
        ``holder`` ending in "/", starts with it: the process that took it is gone.
        Returns how many."""
        whose = "substr(holder, 1, ?) = ?" if holder.endswith("/") else "? > 0 AND holder = ?"
        rows = await self._rows(
            f"SELECT seq FROM wallet_transactions WHERE kind = 'debit' AND settled = ? AND {whose}",
            (PENDING, len(holder), holder),
        )
        for (seq,) in rows:
            await self.wallet_refund(int(seq), at)
        return len(rows)

    async def wallet_entries(
        self, org_id: str, before_seq: int | None, limit: int, environment: str = "live"
    ) -> list[WalletEntry]:
        rows = await self._rows(
            f"SELECT {ENTRY_COLUMNS} FROM wallet_transactions WHERE org_id = ? "
            "AND environment = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (org_id, environment, before_seq if before_seq is not None else 2**62, limit),
        )
        return [WalletEntry(*r) for r in rows]
