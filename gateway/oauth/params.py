"""Reading OAuth parameters: one value per name (RFC 6749 §3.1, §3.2)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from multidict import MultiMapping

from gateway.errors import InvalidRequest
from gateway.wire import loads

MAX_VALUE = 4096


def single_values(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """A dict of parameters; a repeated or non-string parameter is an invalid request."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidRequest(f"Parameter '{name}' is repeated.")
        if not isinstance(value, str):
            raise InvalidRequest(f"Parameter '{name}' must be a string.")
        if len(value) > MAX_VALUE:
            raise InvalidRequest(f"Parameter '{name}' is too long.")
        params[name] = value
    # §3.1: parameters sent without a value are treated as omitted.
    return {k: v for k, v in params.items() if v != ""}


def query_params(query: MultiMapping[str]) -> dict[str, str]:
    return single_values(query.items())


async def body_params(request: web.Request) -> dict[str, str]:
    """Form-encoded (RFC 6749 §3.2) or, for clients that insist, a flat JSON object."""
    content_type = request.content_type
    try:
        if content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            return single_values(form.items())
        if content_type == "application/json":
            data = loads(await request.read())
            if not isinstance(data, dict):
                raise InvalidRequest("The JSON body must be an object.")
            return single_values(data.items())
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The request body cannot be parsed.") from None
    raise InvalidRequest(
        "Send parameters as application/x-www-form-urlencoded (or application/json)."
    )


def require(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise InvalidRequest(f"Parameter '{name}' is required.")
    return value


def scope_list(text: str | None) -> tuple[str, ...] | None:
    """RFC 6749 §3.3: space-delimited, order irrelevant; None when absent."""
    if text is None:
        return None
    return tuple(dict.fromkeys(s for s in text.split(" ") if s))
