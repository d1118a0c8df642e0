"""People, OAuth clients and consents (any SQL dialect); codes and tokens are
``tables_tokens``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.records import (
    ClientWithSecret,
    Grant,
    Membership,
    OAuthClient,
    Org,
    User,
)
from gateway.store.rows import Rows
from gateway.store.tables_sessions import SessionTables
from gateway.store.tables_tokens import TokenTables

EDITABLE = ("name", "redirect_uris", "allowed_scopes", "allowed_origins")  # of a client
# A client's row holds its secret's digest where the record says only whether it has one.
CLIENTS = Rows(OAuthClient, lines=("redirect_uris", "allowed_origins"), skip=("public",))
CLIENT_COLUMNS = f"secret_digest, {CLIENTS.columns}"
GRANTS = Rows(Grant)  # as GRANT_SELECT reads them
GRANT_SELECT = (
    "SELECT g.id, g.user_id, u.email, g.org_id, g.client_id, c.name, g.scopes, g.created_at, "
    "g.updated_at, g.revoked_at FROM oauth_grants g JOIN users u ON u.id = g.user_id "
    "JOIN oauth_clients c ON c.id = g.client_id"
)


def client_from_row(row: Sequence[Any]) -> ClientWithSecret:
    secret, *columns = row
    return ClientWithSecret(CLIENTS.read(columns, public=secret is None), secret)


class OAuthTables(TokenTables, SessionTables):  # a user's sessions end with their password
    # --- people ---

    async def create_user(self, user: User, password_hash: str) -> None:
        await self._write(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (user.id, user.email, password_hash, user.created_at),
        )

    async def find_user(self, email: str) -> tuple[User, str] | None:
        rows = await self._rows(
            "SELECT id, email, created_at, password_hash, disabled_at FROM users WHERE email = ?",
            (email.lower(),),
        )
        if not rows:
            return None
        uid, email, created, password_hash, disabled = rows[0]
        return User(uid, email, created, disabled), password_hash

    async def set_password(self, user_id: str, password_hash: str, at: float) -> None:
        async with self.transaction():
            await self._write(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )
            await self.end_user_sessions(user_id, at)

    async def disable_user(self, user_id: str, at: float) -> None:
        async with self.transaction():
            await self._write(
                "UPDATE users SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL",
                (at, user_id),
            )
            await self.end_user_sessions(user_id, at)
            await self._revoke_where("user_id = ?", (user_id,), at)

    async def set_membership(self, user_id: str, org_id: str, role: str, at: float) -> None:
        await self._write(
            "INSERT INTO memberships (user_id, org_id, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role",
            (user_id, org_id, role, at),
        )

    async def memberships(self, user_id: str) -> list[Membership]:
        rows = await self._rows(
            "SELECT o.id, o.name, o.created_at, m.role FROM memberships m "
            "JOIN orgs o ON o.id = m.org_id WHERE m.user_id = ? ORDER BY o.name",
            (user_id,),
        )
        return [Membership(Org(oid, name, created), role) for oid, name, created, role in rows]

    # --- clients and consents ---

    async def insert_client(self, client: OAuthClient, secret_digest: str | None) -> None:
        await self._write(
            f"INSERT INTO oauth_clients ({CLIENT_COLUMNS}) VALUES (?, {CLIENTS.places})",
            (secret_digest, *CLIENTS.values(client)),
        )

    async def get_client(self, client_id: str) -> ClientWithSecret | None:
        rows = await self._rows(
            f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = ?", (client_id,)
        )
        return client_from_row(rows[0]) if rows else None

    async def list_clients(self) -> list[OAuthClient]:
        rows = await self._rows(f"SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY created_at")
        return [client_from_row(r).client for r in rows]

    async def disable_client(self, client_id: str, at: float) -> bool:
        async with self.transaction():
            changed = await self._write(
                "UPDATE oauth_clients SET disabled_at = ? WHERE id = ? AND disabled_at IS NULL",
                (at, client_id),
            )
            if changed:
                await self._revoke_where("client_id = ?", (client_id,), at)
        return bool(changed)

    async def list_clients_page(
        self, owner_org_id: str, after: str | None, limit: int, environment: str | None = None
    ) -> list[OAuthClient]:
        rows = await self._rows(
            f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE owner_org_id = ? AND id > ? "
            "AND environment LIKE ? ORDER BY id LIMIT ?",
            (owner_org_id, after or "", environment or "%", limit),
        )
        return [client_from_row(r).client for r in rows]

    async def update_client(self, client: OAuthClient) -> None:
        await self._write(
            f"UPDATE oauth_clients SET {CLIENTS.assigned(*EDITABLE)} WHERE id = ?",
            (*CLIENTS.values(client, *EDITABLE), client.id),
        )

    async def set_client_secret(self, client_id: str, secret_digest: str) -> None:
        await self._write(
            "UPDATE oauth_clients SET secret_digest = ? WHERE id = ?", (secret_digest, client_id)
        )

    async def delete_client(self, client_id: str, at: float) -> bool:
        async with self.transaction():
            await self._revoke_where("client_id = ?", (client_id,), at)
            deleted = await self._write("DELETE FROM oauth_clients WHERE id = ?", (client_id,))
        return bool(deleted)

    async def list_grants_page(
        self, org_id: str, user_id: str | None, after: str | None, limit: int
    ) -> list[Grant]:
        mine = " AND g.user_id = ?" if user_id is not None else ""
        rows = await self._rows(
            f"{GRANT_SELECT} WHERE g.org_id = ? AND g.revoked_at IS NULL AND g.id > ?{mine} "
            "ORDER BY g.id LIMIT ?",
            (org_id, after or "", *((user_id,) if user_id is not None else ()), limit),
        )
        return [GRANTS.read(r) for r in rows]

    async def get_grant(self, grant_id: str) -> Grant | None:
        rows = await self._rows(f"{GRANT_SELECT} WHERE g.id = ?", (grant_id,))
        return GRANTS.read(rows[0]) if rows else None

    async def revoke_grant(self, grant_id: str, at: float) -> None:
        async with self.transaction():
            await self._write(
                "UPDATE oauth_grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, grant_id),
            )
            await self._revoke_where("grant_id = ?", (grant_id,), at)

    async def upsert_grant(
        self,
        grant_id: str,
        user_id: str,
        org_id: str,
        client_id: str,
        scopes: tuple[str, ...],
        at: float,
    ) -> str:
        async with self.transaction():
            await self._write(
                "INSERT INTO oauth_grants (id, user_id, org_id, client_id, scopes, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, org_id, client_id) DO UPDATE SET "
                "scopes = excluded.scopes, updated_at = excluded.updated_at, revoked_at = NULL",
                (grant_id, user_id, org_id, client_id, " ".join(scopes), at, at),
            )
            rows = await self._rows(
                "SELECT id FROM oauth_grants WHERE user_id = ? AND org_id = ? AND client_id = ?",
                (user_id, org_id, client_id),
            )
        return str(rows[0][0])

    async def live_credentials(self, org_id: str, now: float) -> int:
        """The organization's keys and tokens that still authenticate."""
        rows = await self._rows(
            "SELECT (SELECT COUNT(*) FROM api_keys WHERE org_id = ? AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?)) + (SELECT COUNT(*) FROM oauth_tokens "
            "WHERE org_id = ? AND revoked_at IS NULL AND expires_at > ?)",
            (org_id, now, org_id, now),
        )
        return int(rows[0][0])

    async def list_users(self, org_id: str | None) -> list[User]:
        where = " WHERE id IN (SELECT user_id FROM memberships WHERE org_id = ?)" if org_id else ""
        rows = await self._rows(
            f"SELECT id, email, created_at, disabled_at FROM users{where} ORDER BY email",
            (org_id,) if org_id else (),
        )
        return [User(*r) for r in rows]

    async def delete_org(self, org_id: str, at: float) -> None:
        """The organization and everything that is its: keys, tokens, its apps (and
        their tokens in other organizations), memberships, grants, wallets,
        subscriptions, events and usage. Every credential is evicted from every cache."""
        async with self.transaction():
            keys = await self._rows("SELECT id FROM api_keys WHERE org_id = ?", (org_id,))
            await self.record_events([k for (k,) in keys], at)
            await self._revoke_where("org_id = ?", (org_id,), at)
            apps = await self._rows(
                "SELECT id FROM oauth_clients WHERE org_id = ? OR owner_org_id = ?",
                (org_id, org_id),
            )
            for (client_id,) in apps:
                await self._revoke_where("client_id = ?", (client_id,), at)
            for table in ("events", "callbacks", "refusal_counts", "usage_daily",
                          "request_errors", "wallet_transactions", "oauth_codes"):  # fmt: skip
                await self._write(f"DELETE FROM {table} WHERE org_id = ?", (org_id,))
            await self._write("DELETE FROM orgs WHERE id = ?", (org_id,))  # the rest cascades
