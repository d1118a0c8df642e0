"""Webhook signatures as the Standard Webhooks specification defines them: a
``whsec_`` secret (base64 of random bytes) and, per delivery, ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` = ``v1,`` + base64 of
HMAC-SHA256 over ``id.timestamp.body``. While a rotated-out secret still
counts, both sign, space-separated, so receivers can switch at their pace."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(
    secrets_in_force: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, message_id, timestamp, body) for s in secrets_in_force
        ),
        "Content-Type": "application/json",
    }
