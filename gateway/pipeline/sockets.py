"""Open WebSockets keep the credential that opened them honest: a socket whose
credential is revoked or expires is closed within a second (close code 4401),
and one whose credential no longer carries the route's scopes with 4403.

One ``SocketGuard`` per worker ticks while sockets are open. Expiry is read
from each socket's principal; revocation from the node's ring of changed
credentials (``gateway.node.shared.Revocations``), which every credential
change on this node, and on others within ``cache.poll_interval``, reaches. A
changed credential is read again from the store (never from the cache): a
rotation or an edit that keeps it valid keeps its sockets open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.errors import InsufficientScope, ServiceUnavailable, Unauthorized
from gateway.node.shared import Revocations
from gateway.pipeline.authn import Principal
from gateway.pipeline.authz import require_scopes
from gateway.pipeline.routes import CompiledRoute

log = logging.getLogger("gateway.sockets")

TICK: Final = 0.25  # seconds between checks: a revoked socket closes well within 1 s
REVOKED: Final = 4401  # close codes in the range for applications (RFC 6455 §7.4.2)
FORBIDDEN: Final = 4403


class Socket(Protocol):
    def end(self, code: int, reason: str) -> None:
        """Close the socket with a close frame to the client."""


@dataclass(slots=True)
class Watch:
    principal: Principal
    recheck: Callable[[], Awaitable[Principal]]
    route: CompiledRoute
    checking: bool = False


class SocketGuard:
    def __init__(self, revocations: Revocations) -> None:
        self.revocations = revocations
        self.watches: dict[Socket, Watch] = {}
        self.seen = revocations.seq()
        self.stale: set[str] = set()  # changed credentials whose recheck is still owed
        self.task: asyncio.Task[None] | None = None
        self.checks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak ones

    def watch(
        self,
        socket: Socket,
        principal: Principal,
        recheck: Callable[[], Awaitable[Principal]],
        route: CompiledRoute,
    ) -> None:
        if not self.watches:
            self.seen = self.revocations.seq()  # what happened before is judged already
        self.watches[socket] = Watch(principal, recheck, route)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, socket: Socket) -> None:
        self.watches.pop(socket, None)

    async def close(self) -> None:
        for task in (self.task, *self.checks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        try:
            while self.watches:
                await asyncio.sleep(TICK)
                self.tick(time.time())
        finally:
            self.task = None

    def tick(self, now: float) -> None:
        if self.revocations.seq() != self.seen:
            self.seen, changed = self.revocations.since(self.seen)
            if changed is None:  # too many to list: read every one again
                self.stale.update(w.principal.credential_id for w in self.watches.values())
            else:
                self.stale.update(changed)
        due, self.stale = self.stale, set()
        for socket, watch in list(self.watches.items()):
            credential_id = watch.principal.credential_id
            if watch.principal.expired(now):
                self._end(socket, REVOKED, "credential expired")
            elif credential_id in due:
                if watch.checking:  # a check began before this change: once more after it
                    self.stale.add(credential_id)
                else:
                    watch.checking = True
                    check = asyncio.get_running_loop().create_task(self._recheck(socket, watch))
                    self.checks.add(check)
                    check.add_done_callback(self.checks.discard)

    async def _recheck(self, socket: Socket, watch: Watch) -> None:
        try:
            principal = await watch.recheck()
            require_scopes(watch.route, principal)
        except Unauthorized:
            self._end(socket, REVOKED, "credential revoked")
        except InsufficientScope:
            self._end(socket, FORBIDDEN, "scope withdrawn")
        except ServiceUnavailable:
            self.stale.add(watch.principal.credential_id)  # the store is away: next tick
        except Exception:
            log.exception("rechecking a WebSocket's credential failed; closing it")
            self._end(socket, REVOKED, "credential unverifiable")
        else:
            watch.principal = principal
        finally:
            watch.checking = False

    def _end(self, socket: Socket, code: int, reason: str) -> None:
        if self.watches.pop(socket, None) is not None:
            socket.end(code, reason)
