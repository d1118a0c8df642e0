"""The session tables: login sessions the server can end, consent requests answered
once (any SQL dialect)."""

from __future__ import annotations

from gateway.store.sql import SqlBase


class SessionTables(SqlBase):
    async def start_session(self, session_id: str, user_id: str, at: float) -> None:
        await self._write(
            "INSERT INTO login_sessions (id, user_id, created_at) VALUES (?, ?, ?)",
            (session_id, user_id, at),
        )

    async def session_live(self, session_id: str) -> bool:
        rows = await self._rows(
            "SELECT 1 FROM login_sessions WHERE id = ? AND ended_at IS NULL", (session_id,)
        )
        return bool(rows)

    async def end_session(self, session_id: str, at: float) -> None:
        await self._write(
            "UPDATE login_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
            (at, session_id),
        )

    async def end_user_sessions(self, user_id: str, at: float) -> None:
        await self._write(
            "UPDATE login_sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL",
            (at, user_id),
        )

    async def answer_consent(self, request_id: str, at: float, forget_before: float) -> bool:
        """Record a consent request as answered; False if it was already (a replay)."""
        async with self.transaction():
            await self._write("DELETE FROM consent_answers WHERE answered_at < ?", (forget_before,))
            added = await self._write(
                "INSERT INTO consent_answers (request_id, answered_at) VALUES (?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (request_id, at),
            )
        return bool(added)
