"""One proxied request through the pipeline, on the engine's connection
(``gateway.http.connection``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, TypeVar

from gateway.errors import (
    ExpectationFailed,
    GatewayError,
    InternalError,
    PayloadTooLarge,
)
from gateway.exchange import Exchange, finish, new_request_id
from gateway.http.heads import RequestHead
from gateway.http.streams import Answer, RequestBody
from gateway.pipeline import Admission
from gateway.pipeline.cors import is_preflight
from gateway.pipeline.decision import Decisions, Original, refusal
from gateway.pipeline.headers import Injected
from gateway.pipeline.idempotency import Keeper, body_digest, replay
from gateway.pipeline.paths import NormalPath, normalize
from gateway.pipeline.proxy import Switched
from gateway.pipeline.relay import Answer as AnswerSink
from gateway.pipeline.relay import BodyTooLarge, Relay
from gateway.store.records import KeptAnswer
from gateway.tracing import continue_trace
from gateway.wait import Wait

if TYPE_CHECKING:
    from gateway.http.connection import Connection

log = logging.getLogger("gateway.engine")

T = TypeVar("T")
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class Call:
    """One proxied request, from its framing to its answer: the pipeline's steps in
    order. A step that may wait returns a ``Wait``; the call then goes on in a task
    once it is over, and otherwise straight from the connection's callbacks."""

    __slots__ = (
        "admission",
        "answer",
        "body",
        "conn",
        "continued",
        "debit",
        "exchange",
        "head",
        "headers",
        "injected",
        "keeper",
        "method",
        "original",
        "pipeline",
        "relay",
        "task",
    )  # fmt: skip

    def __init__(
        self,
        conn: Connection,
        head: RequestHead,
        body: bytes | RequestBody | None,
        decisions: Decisions | None = None,
    ) -> None:
        self.conn = conn
        self.pipeline = conn.engine.pipeline
        self.head = head
        self.method = head.method  # the request judged: for a decision, the original's
        self.headers = head.fields
        self.exchange = Exchange(request_id=new_request_id(), started=time.perf_counter())
        self.answer = Answer(conn, head, self.exchange)
        self.body = body
        self.task: asyncio.Task[None] | None = None  # a step waiting
        self.admission: Admission | None = None
        self.injected = Injected(b"", [])
        self.debit: int | None = None
        self.keeper: Keeper | None = None  # a paid call's answer kept for its retries
        self.relay: Relay | None = None
        self.continued = False  # 100 Continue sent
        self.original: Original | None = None  # a decision's (``gateway.pipeline.decision``)
        self.exchange.trace = continue_trace(self.headers)
        if decisions is not None:
            self.original = decisions.original(head.method, head.target, self.headers, conn.peer)
            self.method = self.original.method

    @property
    def unread_body(self) -> bool:
        return isinstance(self.body, RequestBody) and not self.body.framing.done

    def start(self, path: NormalPath | None, refusal: GatewayError | None) -> None:
        self.conn.engine.metrics.active += 1
        head = self.head
        if self.original is not None:  # judge the original request, not this one
            try:
                path, refusal = normalize(self.original.target), None
            except GatewayError as exc:
                path, refusal = None, exc
        if refusal is None and self.original is None and self._preflight(path):
            return
        if refusal is not None:
            self._done(refusal)
        elif (
            head.expect is not None
            and head.version == "1.1"
            and (head.expect.lower() != "100-continue")
        ):
            self._done(ExpectationFailed())
        else:
            assert path is not None
            self._run(self._authorize, path)

    def _preflight(self, path: NormalPath | None) -> bool:
        """A CORS preflight for a route with CORS: answered here, never forwarded."""
        headers = self.headers
        origin, requested = headers.get("Origin"), headers.get("Access-Control-Request-Method")
        if path is None or not is_preflight(self.head.method, origin, requested):
            return False
        assert requested is not None
        match = self.pipeline.routes.match(requested.upper(), path.segments)
        if match is None or match.route.cors is None:
            return False
        self.answer.whole(204, "", match.route.cors.preflight(origin), b"")
        self.exchange.route = match.route  # after: the answer is no actual response
        self._done(None)
        return True

    def cancel(self) -> None:
        """Shutdown: stop waiting."""
        if self.task is not None:
            self.task.cancel()
        if self.relay is not None:
            self.relay.cancel()

    def _run(self, step: Callable[[T], None], value: T) -> None:
        try:
            step(value)
        except Exception as exc:
            self._done(exc)

    def _then(self, result: T | Wait[T], step: Callable[[T], None]) -> None:
        if isinstance(result, Wait):
            self.task = self.conn.loop.create_task(self._resume(result, step))
        else:
            step(result)

    async def _resume(self, wait: Wait[T], step: Callable[[T], None]) -> None:
        try:
            value = await wait
        except Exception as exc:
            self.task = None
            self._done(exc)
            return
        self.task = None
        self._run(step, value)

    def _authorize(self, path: NormalPath) -> None:
        conn = self.conn
        upgrade = self.head.upgrade if self.original is None else None  # a decision's own
        judged = self.pipeline.authorize(
            self.method, path, self.headers, conn.peer, conn.scheme, self.exchange, upgrade
        )
        self._then(judged, self._count)

    def _count(self, admission: Admission) -> None:
        self.admission = admission
        limit = self.pipeline.forwarder.body_limit(admission.route)
        if limit is not None:
            if self.head.length > limit:
                raise PayloadTooLarge()
            if isinstance(self.body, RequestBody):
                self.body.limit = limit
        self._then(self.pipeline.count(admission), self._charge)

    def _charge(self, injected: Injected) -> None:
        assert self.admission is not None
        trace = self.exchange.trace
        assert trace is not None
        injected.fields.append(("traceparent", trace.traceparent))  # made for this request
        self.injected = injected
        # A decision is charged for good: the gateway never sees the upstream's answer.
        idempotency_key = self.headers.get("Idempotency-Key") if self.original is None else None
        charged: int | KeptAnswer | Wait[int | KeptAnswer | None] | None = self.pipeline.charge(
            self.admission, self.method, idempotency_key
        )
        self._then(charged, self._forward)

    def _continue(self) -> None:
        if self.head.expect is not None and self.head.version == "1.1":
            self.conn.send(CONTINUE)  # authorized: now the client may send its body
            self.continued = True

    def _forward(self, charged: int | KeptAnswer | None) -> None:
        assert self.admission is not None
        if self.original is not None:
            self._allow(charged)
            return
        self._continue()
        if isinstance(charged, KeptAnswer):  # a paid call's retry: answered from the copy
            read = Wait(body_digest(self.body))
            self.task = self.conn.loop.create_task(
                self._resume(read, lambda digest: self._replay(charged, digest))
            )
            return
        head, admission = self.head, self.admission
        self.debit = charged
        if head.upgrade is not None:  # a WebSocket handshake (``gateway.http.tunnel``)
            switching = self.pipeline.forwarder.upgrade(
                admission.route, admission.upstream, admission.path, self.headers,
                self.injected, self.exchange, self.answer,
            )  # fmt: skip
            self.task = self.conn.loop.create_task(self._resume(Wait(switching), self._switch))
            return
        body: bytes | AsyncIterator[bytes] | None = self.body
        answer: AnswerSink = self.answer
        if charged is not None and "Idempotency-Key" in self.headers:
            self.keeper = keeper = Keeper(answer, body)
            body, answer = keeper.body, keeper
        self.relay = self.pipeline.forwarder.forward(
            head.method, admission.route, admission.upstream, admission.path, self.headers,
            self.injected, body, head.chunked, self.exchange, answer, self._forwarded,
        )  # fmt: skip

    def _allow(self, debit: int | KeptAnswer | None) -> None:
        """A decision that lets the request pass: 200 and who the caller is."""
        assert self.admission is not None and not isinstance(debit, KeptAnswer)
        self.answer.whole(200, "", self.pipeline.identity(self.admission), b"")
        if debit is None:
            self._done(None)
            return
        settled = self.pipeline.settle(debit, True, None, self.exchange)
        self.task = self.conn.loop.create_task(self._resume(Wait(settled), self._done))

    def _switch(self, switched: Switched | None) -> None:
        """The upstream's answer to a WebSocket handshake: a 101 turns the connection
        into the socket, watched for its credential; any other answer was relayed."""
        conn, admission = self.conn, self.admission
        assert admission is not None
        if switched is not None:
            if conn.lost:
                switched.conn.close()
                self.exchange.aborted = True
            else:
                self.answer.switching(switched.reason, switched.headers)
                tunnel = conn.open_tunnel(switched.conn)
                if admission.principal is not None:
                    recheck = self.pipeline.authenticator.recheck(self.headers)
                    conn.engine.sockets.watch(tunnel, admission.principal, recheck,
                                              admission.route)  # fmt: skip
        self._forwarded(None)

    def _replay(self, kept: KeptAnswer, digest: str) -> None:
        headers, body = replay(kept, digest, self.exchange.request_id)
        self.answer.whole(kept.status, kept.reason, headers, body)
        self._done(None)

    def _forwarded(self, error: GatewayError | None) -> None:
        if self.debit is None:
            self._done(error)
            return
        succeeded = error is None and not self.exchange.aborted and self.answer.status < 400
        kept = self.keeper.kept() if self.keeper is not None else None
        settled = self.pipeline.settle(self.debit, succeeded, kept, self.exchange)
        self.task = self.conn.loop.create_task(
            self._resume(Wait(settled), lambda _: self._done(error))
        )

    def _done(self, failure: BaseException | None) -> None:
        """Answer an error if there is one, account for the request, and hand the
        connection back."""
        exchange, answer, conn = self.exchange, self.answer, self.conn
        error = as_gateway_error(failure, exchange)
        if error is not None and not exchange.aborted:
            if answer.status:
                answer.abort()  # the answer had started: cutting it is all that is left
            else:
                if self.unread_body or (self.head.expect is not None and not self.continued):
                    conn.keep_alive = False  # what is left of the body is not a request
                if self.original is not None:
                    status, headers, body = refusal(error, exchange.request_id, self.original.nginx)
                    answer.whole(status, "", headers, body)
                else:
                    answer.error(error)
        engine = conn.engine
        engine.metrics.active -= 1
        status = error.status if error is not None else answer.status
        finish(engine.metrics, engine.usage, engine.access_log, self.head.method,
               logged_path(self.head.target), conn.peer, exchange, status, error,
               engine.spans)  # fmt: skip
        self.task = None
        conn.finished(self)


def as_gateway_error(exc: BaseException | None, exchange: Exchange) -> GatewayError | None:
    """What the client is told about an exception from the pipeline."""
    if exc is None or isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, BodyTooLarge):
        return PayloadTooLarge()
    log.error("unhandled error (request id %s)", exchange.request_id, exc_info=exc)
    return InternalError(exchange.request_id)


def logged_path(target: str) -> str:
    """The path as the access log shows it: no query, no scheme or authority."""
    path = target.partition("?")[0]
    if not path.startswith("/"):  # absolute-form (RFC 9112 §3.2.2)
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    return path
