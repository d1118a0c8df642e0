"""Authorization codes and OAuth tokens (any SQL dialect)."""

from __future__ import annotations

from typing import Any

from gateway.store.records import AuthCode, ConsumedCode, ConsumedToken, OAuthToken
from gateway.store.rows import Rows
from gateway.store.sql import SqlBase

CODES = Rows(AuthCode)
TOKENS = Rows(OAuthToken)


class TokenTables(SqlBase):
    async def insert_code(self, code: AuthCode, digest: str) -> None:
        await self._write(
            f"INSERT INTO oauth_codes ({CODES.columns}, digest) VALUES ({CODES.places}, ?)",
            (*CODES.values(code), digest),
        )

    async def consume_code(
        self, digest: str, at: float, client_id: str | None = None
    ) -> ConsumedCode | None:
        # Bound to its client: another client presenting it neither spends nor sees it.
        bound = " AND client_id = ?" if client_id is not None else ""
        args = (digest, client_id) if client_id is not None else (digest,)
        async with self.transaction():
            fresh = await self._write(
                f"UPDATE oauth_codes SET used_at = ? WHERE digest = ?{bound} AND used_at IS NULL",
                (at, *args),
            )
            rows = await self._rows(
                f"SELECT {CODES.columns} FROM oauth_codes WHERE digest = ?{bound}", args
            )
        if not rows:
            return None
        return ConsumedCode(fresh=bool(fresh), code=CODES.read(rows[0]))

    async def insert_tokens(self, tokens: list[tuple[OAuthToken, str]]) -> None:
        await self._write_many(
            f"INSERT INTO oauth_tokens ({TOKENS.columns}, digest) VALUES ({TOKENS.places}, ?)",
            [(*TOKENS.values(token), digest) for token, digest in tokens],
        )

    async def find_token(self, digest: str) -> OAuthToken | None:
        rows = await self._rows(
            f"SELECT {TOKENS.columns} FROM oauth_tokens WHERE digest = ?", (digest,)
        )
        return TOKENS.read(rows[0]) if rows else None

    async def consume_refresh_token(self, digest: str, at: float) -> ConsumedToken | None:
        async with self.transaction():
            fresh = await self._write(
                "UPDATE oauth_tokens SET used_at = ? "
                "WHERE digest = ? AND kind = 'refresh' AND used_at IS NULL",
                (at, digest),
            )
            rows = await self._rows(
                f"SELECT {TOKENS.columns} FROM oauth_tokens WHERE digest = ? AND kind = 'refresh'",
                (digest,),
            )
        if not rows:
            return None
        return ConsumedToken(fresh=bool(fresh), token=TOKENS.read(rows[0]))

    async def revoke_token(self, token_id: str, at: float) -> None:
        await self._revoke_where("id = ?", (token_id,), at)

    async def revoke_family(self, family_id: str, at: float) -> None:
        await self._revoke_where("family_id = ?", (family_id,), at)

    async def token_apps(self, token_ids: list[str]) -> dict[str, str]:
        """The name of the application each token was issued to."""
        if not token_ids:
            return {}
        rows = await self._rows(
            "SELECT t.id, c.name FROM oauth_tokens t JOIN oauth_clients c ON c.id = t.client_id "
            f"WHERE t.id IN ({', '.join('?' * len(token_ids))})",
            tuple(token_ids),
        )
        return {str(t): str(name) for t, name in rows}

    async def _revoke_where(self, where: str, params: tuple[Any, ...], at: float) -> None:
        """Revoke matching live tokens and tell every node's cache about each one."""
        async with self.transaction():
            rows = await self._rows(
                f"SELECT id FROM oauth_tokens WHERE {where} AND revoked_at IS NULL", params
            )
            if not rows:
                return
            await self._write(
                f"UPDATE oauth_tokens SET revoked_at = ? WHERE {where} AND revoked_at IS NULL",
                (at, *params),
            )
            await self.record_events([r[0] for r in rows], at)
