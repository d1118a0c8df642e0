"""API keys and organizations as operations: what the CLI (and later the
management API) call. Validation lives here so every entry point refuses the
same things the same way."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from gateway import crypto
from gateway.events import key_event
from gateway.store import ApiKey, Conflict, Org, Store

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NAME_MAX = 200


class InvalidInput(ValueError):
    """An operation's input is invalid; the message is meant for the person, and
    ``field`` names the input at fault so an API can point at it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    secret: str  # shown exactly once


def parse_duration(text: str) -> int:
    """'30d', '12h', '15m', '3600s' or '3600' -> seconds."""
    if text.strip().isdigit():
        seconds = int(text)
    else:
        m = DURATION.match(text)
        if not m:
            raise InvalidInput(
                f"bad duration {text!r}; use a number with s, m, h, d or w, e.g. 30d"
            )
        seconds = int(m.group(1)) * DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise InvalidInput("a duration must be positive")
    return seconds


def check_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidInput(f"{what} must be 1 to {NAME_MAX} printable characters")
    return name


def check_scopes(requested: Iterable[str], catalog: Mapping[str, str]) -> tuple[str, ...]:
    scopes: list[str] = []
    for scope in requested:
        if scope not in catalog:
            known = ", ".join(sorted(catalog)) or "the catalog is empty"
            raise InvalidInput(f"unknown scope {scope!r} (known: {known})")
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise InvalidInput("a key needs at least one scope")
    return tuple(scopes)


async def create_org(store: Store, name: str) -> Org:
    name = check_name(name, "an organization name")
    if name.startswith("org_"):
        raise InvalidInput("an organization name may not start with 'org_' (that is how ids look)")
    org = Org(id=crypto.new_id("org"), name=name, created_at=time.time())
    try:
        await store.create_org(org)
    except Conflict:
        raise InvalidInput(f"an organization named {org.name!r} already exists") from None
    return org


async def resolve_org(store: Store, id_or_name: str) -> Org:
    org = await store.find_org(id_or_name)
    if org is None:
        raise InvalidInput(f"unknown organization {id_or_name!r}")
    return org


@dataclass(frozen=True, slots=True)
class KeyLimitsIn:
    max_requests: int | None = None
    rate_limit: int | None = None
    allowed_ips: tuple[str, ...] = ()
    max_paid_requests: int | None = None
    max_spend: int | None = None


async def issue_api_key(
    store: Store,
    org: Org,
    *,
    name: str,
    scopes: Iterable[str],
    catalog: Mapping[str, str],
    ttl_seconds: int | None = None,
    expires_at: float | None = None,
    limits: KeyLimitsIn = KeyLimitsIn(),
    environment: str = "live",
) -> IssuedKey:
    now = time.time()
    if ttl_seconds:
        expires_at = now + ttl_seconds
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("the expiry must be in the future")
    if environment not in crypto.KEY_PREFIXES:
        raise InvalidInput("the environment is 'live' or 'test'")
    secret = crypto.new_api_key(environment)
    record = ApiKey(
        id=crypto.new_id("key"),
        org_id=org.id,
        name=check_name(name, "a key name"),
        prefix=crypto.display_prefix(secret),
        scopes=check_scopes(scopes, catalog),
        created_at=now,
        expires_at=expires_at,
        max_requests=limits.max_requests,
        rate_limit=limits.rate_limit,
        allowed_ips=limits.allowed_ips,
        max_paid_requests=limits.max_paid_requests,
        max_spend=limits.max_spend,
        environment=environment,
    )
    async with store.transaction():
        await store.insert_api_key(record, crypto.digest(secret))
        await store.add_event(key_event(record, "key.created"))
    return IssuedKey(record, secret)


async def update_api_key(store: Store, key: ApiKey, **changes: object) -> ApiKey:
    """Apply validated changes (name, scopes, expires_at, limits) and evict caches."""
    updated = replace(key, **changes)  # type: ignore[arg-type]
    if updated.expires_at is not None and updated.expires_at <= time.time():
        raise InvalidInput("the expiry must be in the future")
    await store.update_api_key(updated, time.time())
    return updated


async def rotate_api_key(store: Store, key: ApiKey, grace_seconds: float) -> IssuedKey:
    """A new secret; the old one keeps working for ``grace_seconds`` (0: not at all)."""
    if key.revoked_at is not None:
        raise InvalidInput("a revoked key cannot be rotated")
    now = time.time()
    secret = crypto.new_api_key(key.environment)
    prefix = crypto.display_prefix(secret)
    rotated = replace(key, prefix=prefix)
    async with store.transaction():
        await store.rotate_api_key(key.id, crypto.digest(secret), prefix, now + grace_seconds, now)
        await store.add_event(key_event(rotated, "key.rotated", old_secret_valid_for=grace_seconds))
    return IssuedKey(rotated, secret)


async def revoke_api_key(store: Store, key_id: str) -> ApiKey:
    key = await store.get_api_key(key_id)
    if key is None:
        raise InvalidInput(f"unknown key {key_id!r}")
    if key.revoked_at is not None:
        raise InvalidInput(f"key {key_id!r} is already revoked")
    async with store.transaction():
        await store.revoke_api_key(key_id, time.time())
        revoked = await store.get_api_key(key_id)
        assert revoked is not None
        await store.add_event(key_event(revoked, "key.revoked"))
    return revoked


async def delete_api_key(store: Store, key: ApiKey) -> None:
    """Gone for good; told as a revocation to whoever listens."""
    async with store.transaction():
        if await store.delete_api_key(key.id, time.time()):
            await store.add_event(key_event(key, "key.revoked", deleted=True))
