"""Metered routes: a successful call on a route with ``cost`` is paid from the
organization's wallet.

The cost is taken before forwarding, in one database transaction that also
checks the key's caps (``max_paid_requests``, ``max_spend``) and never lets the
balance go below zero; an unfunded call gets 402 and is not forwarded. If the
call does not succeed (the upstream answers 4xx/5xx, or cannot be reached) the
cost is refunded. A client retrying with the same ``Idempotency-Key`` header is
charged once: the retry is answered with the first call's answer, kept in
the database, and does not reach the upstream (``gateway.pipeline.idempotency``).
Each charge is written before the request goes upstream, so a
shutdown cannot lose one. The charge and its settling are the only database
writes on the request path, and only on paid routes.
"""

from __future__ import annotations

import hashlib
import time

from gateway.errors import (
    BadRequest,
    GatewayError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    PaymentRequired,
)
from gateway.store import Store
from gateway.store.records import KeptAnswer

IDEMPOTENCY_KEY_MAX = 200


REFUSALS: dict[str, type[GatewayError]] = {
    "idempotency_mismatch": IdempotencyKeyReused,
    "idempotency_in_progress": IdempotencyKeyInUse,
}


def fingerprint(method: str, path: str) -> str:
    """What a retry must repeat: the method and the normalized path with its query."""
    return hashlib.sha256(f"{method} {path}".encode("utf-8", "surrogateescape")).hexdigest()


class Wallet:
    """``holder`` names this process on its debits: if it dies before a call is
    settled, its supervisor refunds what it held (``Store.wallet_release``)."""

    def __init__(self, store: Store, holder: str) -> None:
        self.store = store
        self.holder = holder

    async def charge(
        self,
        org_id: str,
        credential_id: str,
        route: str,
        cost: int,
        request_id: str,
        idempotency_key: str | None,
        request_fingerprint: str,
        environment: str = "live",
    ) -> int | KeptAnswer:
        """Take the route's cost; returns the debit to settle or refund once the call
        is over, or for the retry of a call that succeeded, its kept answer."""
        if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            raise BadRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.")
        debit = await self.store.wallet_debit(
            org_id,
            credential_id,
            cost,
            request_id=request_id,
            route=route,
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint if idempotency_key is not None else None,
            holder=self.holder,
            at=time.time(),
            environment=environment,
        )
        if debit.refused is not None:
            refusal = REFUSALS.get(debit.refused)
            raise refusal() if refusal is not None else PaymentRequired(debit.refused)
        if debit.kept is not None:
            return debit.kept
        assert debit.seq is not None
        return debit.seq

    async def settle(self, debit_seq: int, kept: KeptAnswer | None) -> None:
        """The call succeeded: its debit stands (and is not refunded should this process
        die), with the answer to replay if it carried an Idempotency-Key."""
        await self.store.wallet_settle(debit_seq, kept, time.time())

    async def refund(self, debit_seq: int) -> None:
        await self.store.wallet_refund(debit_seq, time.time())
