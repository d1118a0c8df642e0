"""Login sessions in an encrypted, authenticated cookie (aiohttp-session + Fernet),
each also a row in the store, so that the server can end it: a copy of the
cookie taken before logout (or before the user's sessions were all ended) signs
in no more.

The storage is used directly by the page handlers rather than as a global
middleware, so the proxied hot path never touches a cookie. Every form carries
a CSRF token bound to the session and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

from aiohttp import web
from aiohttp_session import Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from gateway.config import Settings
from gateway.store import Store

log = logging.getLogger("gateway.web")
CSRF_FIELD = "csrf_token"
REVEAL = "reveal"  # session key of a secret waiting to be shown once


class Sessions:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        secret = settings.session.secret
        if secret is None:
            log.warning("session.secret is not set: logins end when this process restarts")
            secret = secrets.token_urlsafe(32)
        key = hashlib.sha256(secret.encode()).digest()  # the 32 bytes Fernet wants
        self.max_age = settings.session.max_age
        self.storage = EncryptedCookieStorage(
            key,
            cookie_name=settings.session.cookie_name,
            max_age=self.max_age,
            httponly=True,
            samesite="Lax",
            secure=str(settings.public_url).startswith("https://"),
            path="/",
        )

    async def load(self, request: web.Request) -> Session:
        session = await self.storage.load_session(request)
        if "user_id" in session:
            sid = session.get("sid")
            expired = time.time() - session.get("login_at", 0) > self.max_age
            if expired or not isinstance(sid, str) or not await self.store.session_live(sid):
                session.invalidate()
                session = await self.storage.new_session()
        return session

    async def signed_in(self, user_id: str, email: str) -> Session:
        """A fresh session for a user who just signed in (so a planted session cannot be
        carried over), recorded in the store."""
        session = await self.storage.new_session()
        sid = secrets.token_urlsafe(24)
        now = time.time()
        await self.store.start_session(sid, user_id, now)
        session.update({"sid": sid, "user_id": user_id, "email": email, "login_at": now})
        return session

    async def end(self, session: Session) -> None:
        """Log out: the session ends on the server too, whatever copies of the cookie."""
        sid = session.get("sid")
        if isinstance(sid, str):
            await self.store.end_session(sid, time.time())
        session.invalidate()

    async def answered(self, request_id: str) -> bool:
        """Note a consent request as answered; False if it already was (a replay)."""
        now = time.time()
        return await self.store.answer_consent(request_id, now, now - self.max_age)

    async def save(self, request: web.Request, response: web.StreamResponse, s: Session) -> None:
        await self.storage.save_session(request, response, s)


def csrf_token(session: Session) -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_ok(session: Session, sent: str | None) -> bool:
    expected = session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode("utf-8", "surrogateescape"))


ENVIRONMENTS = ("live", "test")


def environment(session: Session) -> str:
    """The environment the dashboard shows and creates in (its Live/Test switch)."""
    chosen = session.get("environment")
    return chosen if isinstance(chosen, str) and chosen in ENVIRONMENTS else "live"
