"""The JSON shape of records, shared by the CLI's --json output and the APIs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from gateway.store.records import (
    ApiKey,
    Callback,
    ErrorRow,
    Event,
    Grant,
    OAuthClient,
    Org,
    Subscription,
    User,
    WalletEntry,
)

MAX_DEPTH = 32  # nesting of JSON bodies the gateway reads; none of its APIs needs more
STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
BRACKETS = re.compile(rb"[\[\]{}]")


def loads(raw: bytes) -> Any:
    """A JSON body, refused (ValueError) when nested deeper than MAX_DEPTH: a body of
    thousands of brackets must be a 400, never the parser's RecursionError."""
    depth = 0
    for bracket in BRACKETS.finditer(STRINGS.sub(b"", raw)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(raw)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def org_json(org: Org) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": rfc3339(org.created_at)}


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "prefix": key.prefix,
        "environment": key.environment,
        "scopes": list(key.scopes),
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
        "revoked_at": rfc3339(key.revoked_at),
        "limits": {
            "max_requests": key.max_requests,
            "rate_limit": key.rate_limit,
            "allowed_ips": list(key.allowed_ips),
            "max_paid_requests": key.max_paid_requests,
            "max_spend": key.max_spend,
        },
        "requests": key.request_count,
        "paid_requests": key.paid_requests,
        "spent": key.spent,
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "created_at": rfc3339(user.created_at),
        "disabled_at": rfc3339(user.disabled_at),
    }


def client_json(client: OAuthClient) -> dict[str, Any]:
    return {
        "client_id": client.id,
        "name": client.name,
        "public": client.public,
        "environment": client.environment,
        "redirect_uris": list(client.redirect_uris),
        "allowed_scopes": list(client.allowed_scopes),
        "grant_types": list(client.grant_types),
        "org_id": client.org_id,
        "allow_user_auth": client.allow_user_auth,
        "allowed_origins": list(client.allowed_origins),
        "created_at": rfc3339(client.created_at),
        "disabled_at": rfc3339(client.disabled_at),
    }


def grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "user_id": grant.user_id,
        "user_email": grant.user_email,
        "client_id": grant.client_id,
        "client_name": grant.client_name,
        "scopes": list(grant.scopes),
        "created_at": rfc3339(grant.created_at),
        "updated_at": rfc3339(grant.updated_at),
    }


def wallet_entry_json(entry: WalletEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "kind": entry.kind,
        "at": rfc3339(entry.at),
        "request_id": entry.request_id,
        "credential_id": entry.credential_id,
        "route": entry.route,
        "note": entry.note,
    }


def error_json(row: ErrorRow) -> dict[str, Any]:
    return {
        "at": rfc3339(row.at),
        "request_id": row.request_id,
        "method": row.method,
        "route": row.route,
        "status": row.status,
        "reason": row.reason,
        "credential_id": row.credential_id,
        "client_ip": row.client_ip,
    }


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "environment": sub.environment,
        "url": sub.url,
        "events": list(sub.events),
        "description": sub.description,
        "created_at": rfc3339(sub.created_at),
        "failing_since": rfc3339(sub.failing_since),
        "disabled": sub.disabled_at is not None,
        "disabled_at": rfc3339(sub.disabled_at),
    }


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "environment": event.environment,
            "timestamp": rfc3339(event.at), "data": json.loads(event.data)}  # fmt: skip


def callback_json(cb: Callback) -> dict[str, Any]:
    return {
        "id": cb.id,
        "subscription_id": cb.subscription_id,
        "event_id": cb.event_id,
        "event_type": cb.event_type,
        "attempt": cb.attempt,
        "status": cb.status,
        "due_at": rfc3339(cb.due_at),
        "attempted_at": rfc3339(cb.attempted_at),
        "http_status": cb.http_status,
        "error": cb.error,
        "latency_ms": cb.latency_ms,
        "next_retry_at": rfc3339(cb.next_retry_at),
    }
