"""Idempotency-Key on paid routes: the first call's answer is kept, its retries get
it back.

A paid call that carries an ``Idempotency-Key`` is forwarded through a ``Keeper``:
the request body is hashed as it streams upstream, and the answer is copied as it
streams to the client (status, fields and up to ``KEPT_BODY_MAX`` bytes of body).
When the call succeeds, the wallet keeps that copy with the debit
(``Wallet.settle``). A retry with the same key, method and path is answered from
the copy, marked ``Idempotent-Replayed: true``, once its own body has been read
and hashed: the same digest, and the copy is replayed without reaching the
upstream or charging again; another body is 422 ``idempotency_key_reused``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gateway.errors import IdempotencyKeyReused, IdempotentAnswerNotKept
from gateway.http.framing import AnswerFields, Relayed
from gateway.store.records import KeptAnswer

if TYPE_CHECKING:
    from gateway.pipeline.relay import Answer

Headers = list[tuple[str, str]]
KEPT_BODY_MAX = 1024 * 1024  # an answer's body kept up to this size (bytes)
REPLAYED = ("Idempotent-Replayed", "true")
Body = bytes | AsyncIterator[bytes] | None


class Keeper:
    """The answer's sink (``gateway.pipeline.proxy.Answer``) that passes everything on
    to the client's and keeps a copy; and the request body, hashed as it is read."""

    __slots__ = (
        "body",
        "chunks",
        "digest",
        "hashed",
        "headers",
        "inner",
        "kept_size",
        "reason",
        "status",
    )  # fmt: skip

    def __init__(self, inner: Answer, body: Body) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.hashed = not isinstance(body, AsyncIterator)  # read whole once it ends
        if isinstance(body, bytes):
            self.digest.update(body)
        self.body: Body = self._hashing(body) if isinstance(body, AsyncIterator) else body
        self.status = 0
        self.reason = ""
        self.headers: Headers = []
        self.chunks: list[bytes] | None = []  # None: over ``KEPT_BODY_MAX``
        self.kept_size = 0

    async def _hashing(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            self.digest.update(chunk)
            yield chunk
        self.hashed = True

    def kept(self) -> KeptAnswer:
        """The copy, once the answer has gone out."""
        return KeptAnswer(
            body_digest=self.digest.hexdigest() if self.hashed else None,
            status=self.status,
            reason=self.reason,
            headers=[(n, v) for n, v in self.headers if n.lower() != "x-request-id"],
            body=b"".join(self.chunks) if self.chunks is not None else None,
        )

    def _keep(self, chunk: bytes) -> None:
        if self.chunks is None:
            return
        self.kept_size += len(chunk)
        if self.kept_size > KEPT_BODY_MAX:
            self.chunks = None
        else:
            self.chunks.append(chunk)

    # --- the Answer protocol ---

    def whole(self, status: int, reason: str, headers: AnswerFields, body: bytes) -> None:
        self.status, self.reason = status, reason
        self.headers = headers.items() if isinstance(headers, Relayed) else headers
        self._keep(body)
        self.inner.whole(status, reason, headers, body)

    async def start(self, status: int, reason: str, headers: AnswerFields) -> None:
        self.status, self.reason = status, reason
        self.headers = headers.items() if isinstance(headers, Relayed) else headers
        await self.inner.start(status, reason, headers)

    async def write(self, chunk: bytes) -> None:
        self._keep(chunk)
        await self.inner.write(chunk)

    async def end(self) -> None:
        await self.inner.end()

    def abort(self) -> None:
        self.inner.abort()


async def body_digest(body: Body) -> str:
    """A retry's body read to its end (nothing is forwarded) and hashed."""
    digest = hashlib.sha256()
    if isinstance(body, bytes):
        digest.update(body)
    elif body is not None:
        async for chunk in body:
            digest.update(chunk)
    return digest.hexdigest()


def replay(kept: KeptAnswer, digest: str, request_id: str) -> tuple[Headers, bytes]:
    """The kept answer's fields and body for a retry whose body hashed to ``digest``;
    422 when the retry is another request or there is nothing to replay."""
    if kept.body_digest is not None and kept.body_digest != digest:
        raise IdempotencyKeyReused()
    if kept.body_digest is None or kept.body is None:
        raise IdempotentAnswerNotKept()
    return [*kept.headers, ("X-Request-Id", request_id), REPLAYED], kept.body
