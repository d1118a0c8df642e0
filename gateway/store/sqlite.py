"""The embedded store: one SQLite file through aiosqlite (WAL, busy timeout)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.base import ApiKey, Conflict, KeyWithDigest, Org, StoreUnavailable

KEY_COLUMNS = "id, org_id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("gateway.store") / "migrations"
    found = [(p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir()]
    return sorted((name, sql) for name, sql in found if name.endswith(".sql"))


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


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the store is not connected")
        return self._db

    async def connect(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def migrate(self) -> list[str]:
        db = self.db
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)"
        )
        async with db.execute("SELECT name FROM schema_migrations") as cur:
            done = {row[0] for row in await cur.fetchall()}
        applied = []
        for name, sql in migration_files():
            if name in done:
                continue
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in split_sql(sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (name,)
                )
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied

    async def ping(self) -> None:
        try:
            async with self.db.execute("SELECT 1 FROM schema_migrations LIMIT 1") as cur:
                await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from None

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        try:
            cur = await self.db.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None
        return cur.rowcount

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            async with self.db.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from None

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
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            changed = await self._write(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if changed:
                await self._write(
                    "INSERT INTO credential_events (credential_id, at) VALUES (?, ?)", (key_id, at)
                )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
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
        await self.db.executemany(
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


def split_sql(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
