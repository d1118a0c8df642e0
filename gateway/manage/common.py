"""What every management endpoint shares: who is calling, bodies, pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.config import key_path
from gateway.errors import ValidationFailed
from gateway.wire import loads

M = TypeVar("M", bound=BaseModel)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Caller:
    """Who acts: always one organization; a user (dashboard) or a credential."""

    org_id: str
    user_id: str | None = None
    credential_id: str | None = None


async def read_body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise ValidationFailed("", "send a JSON body with Content-Type: application/json")
    try:
        raw = loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("", "the body is not valid JSON") from None
    return validate(model, raw)


def validate(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = key_path(first["loc"]) if first["loc"] else ""
        raise ValidationFailed(field, first["msg"]) from None


def encode_cursor(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ValidationFailed(name, "give it once")
    return values[0] if values else None


def environment_param(request: web.Request) -> str | None:
    """``?environment=live|test``: one environment's records; None for both."""
    value = one(request, "environment")
    if value is not None and value not in ("live", "test"):
        raise ValidationFailed("environment", "'live' or 'test'")
    return value


def page_params(request: web.Request) -> tuple[str | None, int]:
    """(decoded cursor, limit) from ?cursor=&limit=."""
    limit = whole_number(one(request, "limit") or str(DEFAULT_LIMIT))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed("limit", f"a whole number from 1 to {MAX_LIMIT}")
    cursor = one(request, "cursor")
    if cursor is None:
        return None, limit
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed("cursor", "not a cursor this API returned") from None
    return decoded, limit


def whole_number(text: str) -> int | None:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def seq_cursor(cursor: str | None) -> int | None:
    """Cursors of newest-first lists are sequence numbers."""
    if cursor is None:
        return None
    seq = whole_number(cursor)
    if seq is None:
        raise ValidationFailed("cursor", "not a cursor this API returned")
    return seq


def page(items: Sequence[dict[str, Any]], limit: int, last_id: str | None) -> dict[str, Any]:
    """A list answer: ``{"data", "next_cursor"}``; the store was asked for limit + 1 rows."""
    more = len(items) > limit
    return {
        "data": list(items[:limit]),
        "next_cursor": encode_cursor(last_id) if more and last_id is not None else None,
    }


def json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})
