"""The embedded store: one SQLite file through aiosqlite (WAL, busy timeout)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.store.base import ApiKey, KeyWithDigest, Org
from gateway.store.sqlite_oauth import OAuthTables

KEY_COLUMNS = "id, org_id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"


def key_from_row(row: Iterable[Any]) -> ApiKey:
    kid, org_id, name, prefix, scopes, created, expires, last_used, revoked = row
    return ApiKey(
        id=kid,
        org_id=org_id,
        name=name,
        prefix=prefix,
        scopes=tuple(scopes.split()),
        created_at=created,
        expires_at=expires,
        last_used_at=last_used,
        revoked_at=revoked,
    )


class SqliteStore(OAuthTables):
    """The embedded store: organizations and API keys here, OAuth in OAuthTables."""

    async def create_org(self, org: Org) -> None:
        await self._write(
            "INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)",
            (org.id, org.name, org.created_at),
        )

    async def find_org(self, id_or_name: str) -> Org | None:
        rows = await self._rows(
            "SELECT id, name, created_at FROM orgs WHERE id = ? OR name = ? "
            "ORDER BY id = ? DESC LIMIT 1",
            (id_or_name, id_or_name, id_or_name),
        )
        return Org(*rows[0]) if rows else None

    async def list_orgs(self) -> list[Org]:
        rows = await self._rows("SELECT id, name, created_at FROM orgs ORDER BY created_at, id")
        return [Org(*r) for r in rows]

    async def insert_api_key(self, key: ApiKey, digest: str) -> None:
        await self._write(
            f"INSERT INTO api_keys ({KEY_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.org_id,
                key.name,
                key.prefix,
                " ".join(key.scopes),
                key.created_at,
                key.expires_at,
                key.last_used_at,
                key.revoked_at,
                digest,
            ),
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._rows(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return key_from_row(rows[0]) if rows else None

    async def list_api_keys(self, org_id: str) -> list[ApiKey]:
        rows = await self._rows(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = ? ORDER BY created_at, id",
            (org_id,),
        )
        return [key_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        async with self.transaction():
            changed = await self._write(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if changed:
                await self.record_events([key_id], at)
        return bool(changed)

    async def find_api_key_by_digest(self, digest: str) -> KeyWithDigest | None:
        rows = await self._rows(
            f"SELECT {KEY_COLUMNS}, digest FROM api_keys WHERE digest = ?", (digest,)
        )
        if not rows:
            return None
        *columns, stored = rows[0]
        return KeyWithDigest(key_from_row(columns), stored)

    async def record_last_used(self, seen: dict[str, float]) -> None:
        if not seen:
            return
        await self._write_many(
            "UPDATE api_keys SET last_used_at = ? "
            "WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            [(ts, kid, ts) for kid, ts in seen.items()],
        )

    async def credential_events_since(self, seq: int) -> tuple[int, list[str]]:
        rows = await self._rows(
            "SELECT seq, credential_id FROM credential_events WHERE seq > ? ORDER BY seq", (seq,)
        )
        if not rows:
            return seq, []
        return rows[-1][0], [r[1] for r in rows]
