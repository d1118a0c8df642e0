"""What the table groups need from a database, whatever its dialect.

Table code is written once, with ``?`` placeholders and SQL that SQLite and
PostgreSQL both accept (``ON CONFLICT ... DO UPDATE``, ``RETURNING``); a driver
(SqliteBase, PostgresBase) supplies the primitives below. Migrations are shared
too: ``{{serial}}`` stands for each dialect's auto-numbered primary key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from importlib import resources
from typing import Any

SERIAL = "{{serial}}"


def migration_files(serial: str) -> list[tuple[str, str]]:
    folder = resources.files("gateway.store") / "migrations"
    found = [
        (p.name, p.read_text(encoding="utf-8").replace(SERIAL, serial))
        for p in folder.iterdir()
        if p.name.endswith(".sql")
    ]
    return sorted(found)


def split_sql(script: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class SqlBase:
    """The primitives; every method raises StoreUnavailable when the database is gone."""

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def migrate(self) -> list[str]:
        raise NotImplementedError

    async def ping(self) -> None:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Statements inside run in one transaction (nested uses join the outer one)."""
        raise NotImplementedError

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement; returns the number of rows it changed."""
        raise NotImplementedError

    async def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    async def record_events(self, credential_ids: Iterable[str], at: float) -> None:
        """Tell every node's credential cache that these credentials changed."""
        await self._write_many(
            "INSERT INTO credential_events (credential_id, at) VALUES (?, ?)",
            [(cid, at) for cid in credential_ids],
        )
