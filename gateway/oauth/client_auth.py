"""Client authentication at the token, revocation and introspection endpoints.

RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded client_id and secret, or
``client_id``/``client_secret`` in the body; a client uses one method, never
both (§2.3). Public clients identify themselves with ``client_id`` alone.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from aiohttp import web

from gateway import crypto
from gateway.errors import InvalidClient, InvalidRequest
from gateway.store import Store
from gateway.store.records import OAuthClient


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise InvalidRequest("The Authorization header is repeated.")
    if not values:
        return None
    scheme, _, encoded = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Use HTTP Basic or client_secret in the body to authenticate.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("The Basic credentials cannot be decoded.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("The Basic credentials cannot be decoded.")
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(
    request: web.Request, params: dict[str, str], store: Store, *, allow_public: bool = True
) -> OAuthClient:
    basic = basic_credentials(request)
    if basic is not None and ("client_secret" in params):
        raise InvalidRequest("Authenticate the client with one method only.")
    if basic is not None:
        client_id, secret = basic
        if params.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id in the body differs from the authenticated client.")
    else:
        client_id, secret = params.get("client_id", ""), params.get("client_secret", "")
    if not client_id:
        raise InvalidClient("Client authentication is required.")
    found = await store.get_client(client_id)
    if found is None or found.client.disabled_at is not None:
        raise InvalidClient()
    if found.secret_digest is None:
        if secret or not allow_public:
            raise InvalidClient()
        return found.client
    if not secret or not crypto.same_digest(crypto.digest(secret), found.secret_digest):
        raise InvalidClient()
    return found.client
