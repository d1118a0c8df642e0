"""OAuth clients as operations: register, list, disable (CLI and management API).

Registration rules follow RFC 9700 §2.1 and RFC 8252: redirect URIs are
absolute, carry no fragment, and use https, except loopback http (native and
development apps) and private-use schemes (``com.example.app:/cb``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway import crypto
from gateway.accounts.api_keys import InvalidInput, check_name, check_scopes, resolve_org
from gateway.config import ADMIN_SCOPE
from gateway.config.sections import ORIGIN
from gateway.store import Store
from gateway.store.records import OAuthClient, Org

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client: OAuthClient
    secret: str | None  # shown once; None for public clients


def check_origin(origin: str) -> str:
    """``scheme://host[:port]``, as a browser sends it in ``Origin``."""
    if not ORIGIN.match(origin):  # the config's rule for routes[].cors.origins
        raise InvalidInput(
            f"{origin!r} is not an origin (scheme://host[:port], no path)", "allowed_origins"
        )
    return origin.lower()


def origins(client: OAuthClient) -> frozenset[str]:
    """Where a browser may call the token and revocation endpoints from for this
    client: its redirect URIs' origins (a public client's) and its allowed origins."""
    found = set(client.allowed_origins)
    if client.public:
        for uri in client.redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme in ("http", "https") and parts.netloc:
                found.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(found)


def check_redirect_uri(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise InvalidInput(f"redirect URI {uri!r} is not a URL") from None
    if not parts.scheme or parts.fragment or "#" in uri or not uri.isprintable() or " " in uri:
        raise InvalidInput(f"redirect URI {uri!r} must be absolute and carry no fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return uri
    if parts.scheme not in ("http", "https") and "." in parts.scheme:
        return uri  # RFC 8252 §7.1 private-use scheme (reverse domain name)
    raise InvalidInput(
        f"redirect URI {uri!r} must use https (http only for loopback hosts, "
        "or a reverse-domain private scheme)"
    )


async def register_client(
    store: Store,
    *,
    name: str,
    redirect_uris: Iterable[str],
    scopes: Iterable[str],
    catalog: Mapping[str, str],
    public: bool = False,
    grant_types: Iterable[str] = (),
    org: str | None = None,
    allow_user_auth: bool = False,
    owner: Org | None = None,
    allow_admin_scope: bool = False,
    allowed_origins: Iterable[str] = (),
    environment: str = "live",
) -> RegisteredClient:
    grants = tuple(dict.fromkeys(grant_types)) or ("authorization_code", "refresh_token")
    for grant in grants:
        if grant not in GRANT_TYPES:
            raise InvalidInput(
                f"unknown grant type {grant!r} (one of: {', '.join(GRANT_TYPES)})", "grant_types"
            )
    uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
    if "authorization_code" in grants and not uris:
        raise InvalidInput(
            "the authorization_code grant needs at least one redirect URI", "redirect_uris"
        )
    if public and "client_credentials" in grants:
        raise InvalidInput(
            "a public client cannot use client_credentials (it has no secret)", "grant_types"
        )
    if "client_credentials" in grants and org is None:
        raise InvalidInput("a client_credentials client must be bound to an organization", "org")
    if allow_user_auth and "client_credentials" not in grants:
        raise InvalidInput("--allow-user-auth only applies to the client_credentials grant")
    scopes = list(scopes)
    if ADMIN_SCOPE in scopes and not allow_admin_scope:
        raise InvalidInput(
            f"{ADMIN_SCOPE} cannot be granted to OAuth clients (oauth.allow_admin_scope)", "scopes"
        )
    if environment not in ("live", "test"):
        raise InvalidInput("the environment is 'live' or 'test'", "environment")
    bound = await resolve_org(store, org) if org is not None else None
    secret = None if public else crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)
    client = OAuthClient(
        id=crypto.new_id("client"),
        name=check_name(name, "a client name"),
        public=public,
        redirect_uris=uris,
        allowed_scopes=check_scopes(scopes, catalog),
        grant_types=grants,
        created_at=time.time(),
        # Bound (acting for the organization) only with client_credentials; any client
        # named with an organization is that organization's, in its dashboard.
        org_id=bound.id if bound and "client_credentials" in grants else None,
        allow_user_auth=allow_user_auth,
        owner_org_id=owner.id if owner else (bound.id if bound else None),
        allowed_origins=tuple(dict.fromkeys(check_origin(o) for o in allowed_origins)),
        environment=environment,
    )
    await store.insert_client(client, crypto.digest(secret) if secret else None)
    return RegisteredClient(client, secret)


async def disable_client(store: Store, client_id: str) -> OAuthClient:
    found = await store.get_client(client_id)
    if found is None:
        raise InvalidInput(f"unknown client {client_id!r}")
    if not await store.disable_client(client_id, time.time()):
        raise InvalidInput(f"client {client_id!r} is already disabled")
    after = await store.get_client(client_id)
    assert after is not None
    return after.client
