"""Reading what a client sent: the org header, JSON bodies, typed fields, parameters.

Every helper either returns a value of the promised type or raises an
:class:`~upstream_example.errors.ApiError`, so handlers never see raw input.
Malformed input is a 400; well-formed input with the wrong content is a 422
naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from aiohttp import web

from upstream_example.errors import (
    AmbiguousOrg,
    InvalidJson,
    InvalidParameter,
    MissingOrg,
    ValidationError,
)

ORG_HEADER = "X-Org-Id"

JsonObject = dict[str, object]

_DIGITS = re.compile(r"[0-9]{1,20}")


def org_id(request: web.Request) -> str:
    """The organization the gateway vouched for; this backend trusts it as is."""
    values = request.headers.getall(ORG_HEADER, [])
    if len(values) > 1:
        raise AmbiguousOrg()
    value = values[0].strip() if values else ""
    if not value:
        raise MissingOrg()
    return value


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN and Infinity by default; JSON (RFC 8259 §6) does not.
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(request: web.Request, *, empty_is_object: bool = False) -> JsonObject:
    """Parse the body as a JSON object (bounded by the app's ``client_max_size``)."""
    raw = await request.read()
    if not raw.strip() and empty_is_object:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidJson() from exc
    if not isinstance(data, dict):
        raise ValidationError("body", "must be a JSON object.")
    return data


def reject_unknown(data: Mapping[str, object], allowed: frozenset[str], prefix: str = "") -> None:
    """Deny by default: a field we do not know is an error, not silently dropped.

    ``prefix`` locates a nested object in messages, e.g. ``"filter."``.
    """
    for key in data:
        if key not in allowed:
            raise ValidationError(f"{prefix}{key}", "unknown field.")


def required_text(data: Mapping[str, object], field: str) -> str:
    value = data.get(field)
    if value is None:
        raise ValidationError(field, "is required.")
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string.")
    return value


def optional_text(data: Mapping[str, object], field: str, prefix: str = "") -> str | None:
    value = data.get(field)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{prefix}{field}", "must be a string or null.")
    return value


def optional_number(data: Mapping[str, object], field: str, prefix: str = "") -> float | None:
    value = data.get(field)
    if value is None:
        return None
    # bool is an int subclass; true is not a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{prefix}{field}", "must be a number.")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ValidationError(f"{prefix}{field}", "must be a finite number.")
    return number


def bounded_int(
    data: Mapping[str, object], field: str, *, default: int, minimum: int, maximum: int
) -> int:
    value = data.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be an integer.")
    if not minimum <= value <= maximum:
        raise ValidationError(field, f"must be between {minimum} and {maximum}.")
    return value


def parse_int_param(name: str, text: str, *, minimum: int, maximum: int) -> int:
    """An ASCII decimal path or query parameter within ``[minimum, maximum]``."""
    # str.isdigit() and int() also accept non-ASCII digits; the regex does not.
    if not _DIGITS.fullmatch(text):
        raise InvalidParameter(f"{name}: must be a decimal integer.")
    value = int(text)
    if not minimum <= value <= maximum:
        raise InvalidParameter(f"{name}: must be between {minimum} and {maximum}.")
    return value


def parse_float_param(name: str, text: str, *, minimum: float, cap: float) -> float:
    """A finite number of at least ``minimum``; values above ``cap`` become ``cap``."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(f"{name}: must be a number.") from None
    if not math.isfinite(value) or value < minimum:
        raise InvalidParameter(f"{name}: must be a finite number >= {minimum}.")
    return min(value, cap)
