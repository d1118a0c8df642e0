"""People and their organizations, as operations shared by the CLI and the pages."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

from gateway import crypto
from gateway.accounts.api_keys import InvalidInput, resolve_org
from gateway.config import ADMIN_SCOPE
from gateway.store import Conflict, Store
from gateway.store.records import User

ROLES = ("owner", "admin", "member")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # Argon2 would take anything; a bound keeps a login from costing too much

ADMIN_ROLES = frozenset({"owner", "admin"})  # who holds gateway:admin in an organization


def check_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.match(email) or not email.isprintable():
        raise InvalidInput(f"{email!r} is not an email address")
    return email


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidInput(f"a password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (one of: {', '.join(ROLES)})")
    return role


async def create_user(store: Store, email: str, password: str, org: str, role: str) -> User:
    email, role = check_email(email), check_role(role)
    target = await resolve_org(store, org)
    password_hash = await asyncio.to_thread(crypto.hash_password, check_password(password))
    user = User(id=crypto.new_id("user"), email=email, created_at=time.time())
    try:
        await store.create_user(user, password_hash)
    except Conflict:
        raise InvalidInput(f"a user with email {email!r} already exists") from None
    await store.set_membership(user.id, target.id, role, time.time())
    return user


async def add_to_org(store: Store, email: str, org: str, role: str) -> User:
    role = check_role(role)
    found = await store.find_user(check_email(email))
    if found is None:
        raise InvalidInput(f"unknown user {email!r}")
    target = await resolve_org(store, org)
    await store.set_membership(found[0].id, target.id, role, time.time())
    return found[0]


async def verify_login(store: Store, email: str, password: str) -> User | None:
    """The user if the password is right; the same Argon2 cost either way."""
    found = await store.find_user(email.strip().lower()) if len(password) <= PASSWORD_MAX else None
    password_hash = found[1] if found else crypto.decoy_hash()
    ok = await asyncio.to_thread(crypto.verify_password, password_hash, password[:PASSWORD_MAX])
    return found[0] if found and ok and found[0].disabled_at is None else None


async def set_password(store: Store, email: str, password: str) -> User:
    """A new password for the user; every session they had ends (a stolen cookie too)."""
    user = await known_user(store, email)
    password_hash = await asyncio.to_thread(crypto.hash_password, check_password(password))
    await store.set_password(user.id, password_hash, time.time())
    return user


async def disable_user(store: Store, email: str) -> User:
    """The user signs in no more; their sessions end and their tokens are revoked."""
    user = await known_user(store, email)
    if user.disabled_at is not None:
        return user
    now = time.time()
    await store.disable_user(user.id, now)
    return replace(user, disabled_at=now)


async def known_user(store: Store, email: str) -> User:
    found = await store.find_user(check_email(email))
    if found is None:
        raise InvalidInput(f"unknown user {email!r}")
    return found[0]


async def held_scopes(
    store: Store, user_id: str, org_id: str, scopes: tuple[str, ...]
) -> tuple[str, ...]:
    """``scopes`` less ``gateway:admin`` unless the user is an owner or admin of the
    organization: a privilege can only be granted by someone who holds it there."""
    if ADMIN_SCOPE not in scopes:
        return scopes
    roles = {m.role for m in await store.memberships(user_id) if m.org.id == org_id}
    if roles & ADMIN_ROLES:
        return scopes
    return tuple(s for s in scopes if s != ADMIN_SCOPE)
