"""Login sessions in an encrypted, authenticated cookie (aiohttp-session + Fernet).

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

log = logging.getLogger("gateway.web")
CSRF_FIELD = "csrf_token"


class Sessions:
    def __init__(self, settings: Settings) -> None:
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
        if session.get("login_at") and time.time() - session["login_at"] > self.max_age:
            session.invalidate()
            session = await self.storage.new_session()
        return session

    async def new(self) -> Session:
        """A fresh session (on login, so a planted session id cannot be carried over)."""
        return await self.storage.new_session()

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
