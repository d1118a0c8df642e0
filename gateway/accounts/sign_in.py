"""Signing in with a password: the one gate every password check goes through (the
login page, and the legacy ``auth_string`` of the client-credentials grant).

Each attempt is counted against a sliding window per account and one per client
address *before* the password is verified, in one atomic step: in the node's
shared memory, so that every worker sees the same attempts, or in Redis with
``redis.url`` so that every node does (``gateway.metering.counters``).
Counting after the slow Argon2 check let parallel guesses through before the
first failure was recorded. A successful sign-in
clears its account's window (not its address's: an attacker could otherwise
reset it by signing in to an account of their own), so the per-account limit
reads as "failures since the last success"; the per-address window counts every
attempt. At most one Argon2 verification per core runs at once, which also
bounds the memory that Argon2 takes. If Redis cannot be reached, sign-in is
refused (503) rather than let an attacker guess without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from limits import parse

from gateway.accounts import users
from gateway.config import Throttle
from gateway.errors import SignInThrottled, SignInUnavailable
from gateway.metering.counters import Counters
from gateway.metering.limits import COUNTER_FAILURES
from gateway.store import Store
from gateway.store.records import User
from gateway.wait import resolved


def window(text: str) -> tuple[int, int]:
    """ "5/15 minutes" -> (5, 900): attempts and seconds."""
    item = parse(text)
    return item.amount, item.get_expiry()


class SignIn:
    def __init__(self, store: Store, settings: Throttle, counters: Counters) -> None:
        self.store = store
        self.per_account = window(settings.per_account)
        self.per_ip = window(settings.per_ip)
        self.counters = counters
        self.verifying = asyncio.Semaphore(os.cpu_count() or 1)

    async def check(self, email: str, password: str, ip: str) -> User | None:
        """The user whose password this is, or None; SignInThrottled (429) once a window
        is full, SignInUnavailable (503) when the counters cannot be reached."""
        email = email.strip().lower()
        try:
            for (limit, period), kind, key in (
                (self.per_account, "login-acct", email),
                (self.per_ip, "login-ip", ip),
            ):
                wait = await resolved(self.counters.attempt(limit, period, kind, key))
                if wait is not None:
                    raise SignInThrottled(wait)
        except COUNTER_FAILURES:
            raise SignInUnavailable() from None
        async with self.verifying:
            user = await users.verify_login(self.store, email, password)
        if user is not None:
            # If the counters are gone, the window ends on its own; the sign-in stands.
            with contextlib.suppress(*COUNTER_FAILURES):
                await resolved(self.counters.clear(*self.per_account, "login-acct", email))
        return user
