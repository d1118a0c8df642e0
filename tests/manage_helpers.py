"""Call the management API the way an integrator would, and read its answers.

Shared by the ``test_manage_*`` modules: a caller (credential or dashboard
session), assertions on the documented error bodies, page walking, and polling
for promises that hold "within a second" (cache invalidation).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse
from conftest import Gateway
from oauth_helpers import hidden_fields, post_login

from gateway.config import ADMIN_SCOPE
from gateway.manage import OPERATIONS, Operation

ALL_BUT_ADMIN = ["contacts:read", "contacts:write", "products:read", "admin:all"]
OTHER_ORG = "globex"


def api_key(secret: str) -> dict[str, str]:
    return {"X-API-Key": secret}


@dataclass(frozen=True, slots=True)
class Api:
    """One caller of the management API: ``headers`` carry its credential (or, for a
    dashboard session, the CSRF token; the test client keeps the cookie)."""

    gw: Gateway
    headers: Mapping[str, str] = field(default_factory=dict)
    credential_id: str = ""  # the API key's id; empty for a session

    def url(self, path: str) -> str:
        return self.gw.settings.management.prefix + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | bytes | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ClientResponse:
        return await self.gw.client.request(
            method,
            self.url(path),
            json=json,
            data=data,
            params=params,
            headers={**self.headers, **(headers or {})},
        )

    async def ok(
        self,
        method: str,
        path: str,
        status: int = 200,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON answer of a call that must succeed with ``status`` ({} for 204)."""
        resp = await self.request(method, path, json=json, params=params)
        if status == 204:
            assert resp.status == 204, await resp.text()
            assert await resp.read() == b""
            return {}
        body: dict[str, Any] = await resp.json()
        assert resp.status == status, body
        assert resp.headers["Cache-Control"] == "no-store"
        return body

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        return await self.ok("GET", path, params=params)


async def admin_api(gw: Gateway, org: str = "acme", name: str = "admin") -> Api:
    """A fresh API key with ``gateway:admin`` in ``org``, ready to call the API."""
    key = await gw.mint([ADMIN_SCOPE], org=org, name=name)
    return Api(gw, api_key(key.secret), key.record.id)


def operation(method: str, path: str) -> Operation:
    found = [op for op in OPERATIONS if op.method == method and op.path == path]
    assert len(found) == 1, (method, path)
    return found[0]


# --- the documented error bodies ------------------------------------------------


async def error_body(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = await resp.json()
    assert resp.status == status, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert resp.headers["Cache-Control"] == "no-store"
    return body


async def validation_error(resp: ClientResponse, field_name: str) -> str:
    """A 400 ``{"error": "validation_error", "message", "field"}`` naming ``field_name``;
    returns the message."""
    body = await error_body(resp, 400, "validation_error")
    assert set(body) == {"error", "message", "field"}, body
    assert body["field"] == field_name, body
    message: str = body["message"]
    return message


async def not_found(resp: ClientResponse) -> None:
    body = await error_body(resp, 404, "not_found")
    assert set(body) == {"error", "message"}, body


async def needs_admin_scope(resp: ClientResponse) -> None:
    """403 with the RFC 6750 §3.1 insufficient_scope challenge naming gateway:admin."""
    body = await error_body(resp, 403, "forbidden")
    assert body["message"] == f"Scope '{ADMIN_SCOPE}' is required."
    assert resp.headers["WWW-Authenticate"] == (
        f'Bearer realm="gateway", error="insufficient_scope", scope="{ADMIN_SCOPE}"'
    )


# --- pages and polling -----------------------------------------------------------


async def walk(api: Api, path: str, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, following ``next_cursor`` ``limit`` items at a time."""
    items: list[dict[str, Any]] = []
    query = {**params, "limit": str(limit)}
    for _ in range(1000):
        page = await api.get(path, **query)
        assert set(page) == {"data", "next_cursor"}, page
        assert len(page["data"]) <= limit, page
        items += page["data"]
        if page["next_cursor"] is None:
            return items
        assert len(page["data"]) == limit, "a page with a next_cursor is a full page"
        query["cursor"] = page["next_cursor"]
    raise AssertionError("next_cursor never ran out")


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 1.0) -> float:
    """Poll ``check`` until it holds; fail after ``seconds``. Returns the time it took."""
    started = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"still not true after {elapsed:.2f}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# --- the dashboard session -------------------------------------------------------


async def sign_in(gw: Gateway, email: str) -> str:
    """Sign the test client in through the login page; the session's CSRF token."""
    login = gw.settings.oauth.paths.login
    page = await (await gw.client.get(login)).text()
    resp = await post_login(gw, page, email)
    assert resp.status == 303, await resp.text()
    signed_in = await (await gw.client.get(login)).text()
    return hidden_fields(signed_in)["csrf_token"]
