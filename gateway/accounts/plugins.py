"""Plugin credentials: a confidential client_credentials client per plugin,
provisioned (or rotated) in one step and handed over as an env file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from gateway import crypto
from gateway.accounts.api_keys import InvalidInput, check_scopes, resolve_org
from gateway.config import Settings
from gateway.oauth.clients import RegisteredClient, register_client
from gateway.oauth.metadata import issuer
from gateway.store import Store

CLIENT_NAME = "plugin:{name}"


@dataclass(frozen=True, slots=True)
class Provisioned:
    registered: RegisteredClient
    rotated: bool  # an existing plugin client got a new secret


def plugin_defaults(settings: Settings, name: str) -> tuple[str | None, tuple[str, ...]]:
    for plugin in settings.plugins:
        if plugin.name == name:
            return plugin.org, plugin.scopes
    return None, ()


async def provision_plugin(
    store: Store, settings: Settings, name: str, org: str, scopes: Iterable[str]
) -> Provisioned:
    owner = await resolve_org(store, org)
    wanted = check_scopes(scopes, settings.scopes)
    client_name = CLIENT_NAME.format(name=name)
    existing = [
        c
        for c in await store.list_clients_page(owner.id, None, 10_000)
        if c.name == client_name and c.disabled_at is None
    ]
    if not existing:
        registered = await register_client(
            store,
            name=client_name,
            redirect_uris=(),
            scopes=wanted,
            catalog=settings.scopes,
            grant_types=("client_credentials",),
            org=owner.id,
            owner=owner,
            allow_admin_scope=settings.oauth.allow_admin_scope,
        )
        return Provisioned(registered, rotated=False)
    client = replace(existing[0], allowed_scopes=wanted)
    if "gateway:admin" in wanted and not settings.oauth.allow_admin_scope:
        raise InvalidInput(
            "gateway:admin cannot be granted to OAuth clients (oauth.allow_admin_scope)"
        )
    secret = crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)
    await store.update_client(client)
    await store.set_client_secret(client.id, crypto.digest(secret))
    # Tokens minted with the old secret stay valid until they expire (at most
    # oauth.access_token_ttl); a plugin restarting with the new file gets a new one.
    return Provisioned(RegisteredClient(client, secret), rotated=True)


def env_lines(settings: Settings, registered: RegisteredClient) -> list[str]:
    base = issuer(settings)
    return [
        f"OAUTH_CLIENT_ID={registered.client.id}",
        f"OAUTH_CLIENT_SECRET={registered.secret}",
        f"OAUTH_TOKEN_URL={base}{settings.oauth.paths.token}",
        f"API_BASE_URL={base}",
    ]


def write_env_file(path: Path, lines: list[str]) -> None:
    """Create or replace the file readable by its owner only (0600), never wider."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("\n".join(lines) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
