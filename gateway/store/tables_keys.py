"""Organizations, API keys and the revocation feed (any SQL dialect)."""

from __future__ import annotations

from gateway.store.records import ApiKey, KeyWithDigest, Org
from gateway.store.rows import Rows
from gateway.store.sql import SqlBase

KEYS = Rows(ApiKey)
EDITABLE = ("name", "scopes", "expires_at", "max_requests", "rate_limit", "allowed_ips",
            "max_paid_requests", "max_spend")  # fmt: skip


class KeyTables(SqlBase):
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
            f"INSERT INTO api_keys ({KEYS.columns}, digest) VALUES ({KEYS.places}, ?)",
            (*KEYS.values(key), digest),
        )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = await self._rows(f"SELECT {KEYS.columns} FROM api_keys WHERE id = ?", (key_id,))
        return KEYS.read(rows[0]) if rows else None

    async def list_api_keys(self, org_id: str) -> list[ApiKey]:
        rows = await self._rows(
            f"SELECT {KEYS.columns} FROM api_keys WHERE org_id = ? ORDER BY created_at, id",
            (org_id,),
        )
        return [KEYS.read(r) for r in rows]

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        async with self.transaction():
            changed = await self._write(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if changed:
                await self.record_events([key_id], at)
        return bool(changed)

    async def find_api_key_by_digest(self, digest: str, now: float) -> KeyWithDigest | None:
        rows = await self._rows(
            f"SELECT {KEYS.columns}, digest, NULL FROM api_keys WHERE digest = ? "
            f"UNION ALL SELECT {KEYS.columns}, previous_digest, previous_valid_until "
            "FROM api_keys WHERE previous_digest = ? AND previous_valid_until > ?",
            (digest, digest, now),
        )
        if not rows:
            return None
        *columns, stored, valid_until = rows[0]
        return KeyWithDigest(KEYS.read(columns), stored, valid_until)

    async def list_api_keys_page(
        self, org_id: str, after: str | None, limit: int, environment: str | None = None
    ) -> list[ApiKey]:
        rows = await self._rows(
            f"SELECT {KEYS.columns} FROM api_keys WHERE org_id = ? AND id > ? "
            "AND environment LIKE ? ORDER BY id LIMIT ?",
            (org_id, after or "", environment or "%", limit),
        )
        return [KEYS.read(r) for r in rows]

    async def update_api_key(self, key: ApiKey, at: float) -> None:
        async with self.transaction():
            await self._write(
                f"UPDATE api_keys SET {KEYS.assigned(*EDITABLE)} WHERE id = ?",
                (*KEYS.values(key, *EDITABLE), key.id),
            )
            await self.record_events([key.id], at)

    async def rotate_api_key(
        self, key_id: str, digest: str, prefix: str, previous_valid_until: float, at: float
    ) -> None:
        async with self.transaction():
            await self._write(
                "UPDATE api_keys SET previous_digest = digest, previous_valid_until = ?, "
                "digest = ?, prefix = ? WHERE id = ?",
                (previous_valid_until, digest, prefix, key_id),
            )
            await self.record_events([key_id], at)

    async def delete_api_key(self, key_id: str, at: float) -> bool:
        async with self.transaction():
            deleted = await self._write("DELETE FROM api_keys WHERE id = ?", (key_id,))
            if deleted:
                await self.record_events([key_id], at)
        return bool(deleted)

    async def keys_expiring(self, now: float, until: float) -> list[ApiKey]:
        rows = await self._rows(
            f"SELECT {KEYS.columns} FROM api_keys WHERE revoked_at IS NULL "
            "AND expires_at > ? AND expires_at <= ?",
            (now, until),
        )
        return [KEYS.read(r) for r in rows]

    async def keys_near_quota(self, fraction: float) -> list[ApiKey]:
        rows = await self._rows(
            f"SELECT {KEYS.columns} FROM api_keys WHERE revoked_at IS NULL "
            "AND max_requests IS NOT NULL AND request_count >= max_requests * ?",
            (fraction,),
        )
        return [KEYS.read(r) for r in rows]

    async def newest_credential_event(self) -> int:
        rows = await self._rows("SELECT MAX(seq) FROM credential_events", ())
        return int(rows[0][0] or 0) if rows else 0

    async def credential_events_since(self, seq: int) -> list[tuple[int, str]]:
        rows = await self._rows(
            "SELECT seq, credential_id FROM credential_events WHERE seq > ? ORDER BY seq", (seq,)
        )
        return [(int(r[0]), str(r[1])) for r in rows]
