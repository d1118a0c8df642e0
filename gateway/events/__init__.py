"""Events: what happened to an organization's credentials and money, recorded as
it happens and delivered to its webhook subscriptions (``delivery``).

An event is written in the transaction of the change that caused it (the
store's outbox, ``gateway.store.tables_events``); events seen on the request
path (rate limits, failures) are gathered in memory and written in the
background (``signals``), and those that come with time (expiry, quotas) by a
periodic scan (``scanner``). Nothing here writes on the request path.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final

from gateway.store.records import ApiKey, Event, Grant, OAuthClient

EVENT_TYPES: Final = (
    "key.created",
    "key.rotated",
    "key.revoked",
    "key.expiring",
    "quota.warning",
    "quota.exhausted",
    "rate_limit.exceeded",
    "wallet.low",
    "grant.created",
    "grant.revoked",
    "client.secret_rotated",
    "refresh_token.reuse_detected",
    "auth.failures_spike",
)


def new_event(
    org_id: str,
    environment: str,
    kind: str,
    data: dict[str, Any],
    *,
    once: str | None = None,
    at: float | None = None,
) -> Event:
    assert kind in EVENT_TYPES, kind
    return Event(
        id=f"evt_{secrets.token_hex(8)}",
        org_id=org_id,
        environment=environment,
        type=kind,
        data=json.dumps(data, separators=(",", ":")),
        at=time.time() if at is None else at,
        once=once,
    )


def key_event(key: ApiKey, kind: str, once: str | None = None, **extra: Any) -> Event:
    """An event about an API key: which key, never its secret."""
    data = {"key_id": key.id, "name": key.name, "prefix": key.prefix,
            "scopes": list(key.scopes), "expires_at": key.expires_at, **extra}  # fmt: skip
    return new_event(key.org_id, key.environment, kind, data, once=once)


def client_event(client: OAuthClient, org_id: str, kind: str, **data: Any) -> Event:
    return new_event(org_id, client.environment, kind,
                     {"client_id": client.id, "client_name": client.name, **data})  # fmt: skip


def grant_event(client: OAuthClient, grant: Grant, kind: str) -> Event:
    """A user's approval of an app, given or withdrawn."""
    return client_event(client, grant.org_id, kind, grant_id=grant.id, user_id=grant.user_id,
                        scopes=list(grant.scopes))  # fmt: skip
