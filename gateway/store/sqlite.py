"""The SQLite driver: aiosqlite connections in WAL mode, writes serialized.

Writes go through one connection, one transaction at a time. Reads outside a
transaction use a second connection, so that a credential lookup on the request
path never waits behind a batch of writes (the usage flush updates a row per key
used): in WAL mode a reader sees every committed write and is not blocked by
the writer. An in-memory database has one connection (a second would be another
database)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.records import Conflict, StoreUnavailable
from gateway.store.sql import SqlBase, migration_files, split_sql
from gateway.store.tables_keys import KeyTables
from gateway.store.tables_oauth import OAuthTables
from gateway.store.tables_usage import UsageTables
from gateway.store.tables_wallet import WalletTables

IN_TRANSACTION: contextvars.ContextVar[bool] = contextvars.ContextVar("in_tx", default=False)


PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # first: see connect()
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
    # Keep hot index pages in memory: key lookups among millions of keys stay flat.
    "PRAGMA cache_size=-65536",  # 64 MiB
    "PRAGMA mmap_size=268435456",  # 256 MiB
)


class SqliteBase(SqlBase):
    """A writing connection (WAL, busy timeout; writes serialized by a lock) and a
    reading one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._tx_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("the store is not connected")
        return self._db

    async def connect(self) -> None:
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            # Wait for a lock rather than fail: another node or worker starting on the same
            # file may hold one for a moment while it switches to WAL.
            await self._db.execute(PRAGMAS[0])
            await self._db.execute("PRAGMA journal_mode=WAL")
            for pragma in PRAGMAS:
                await self._db.execute(pragma)
            if str(self.path) != ":memory:":
                self._reader = await aiosqlite.connect(self.path, isolation_level=None)
                for pragma in (*PRAGMAS, "PRAGMA query_only=ON"):
                    await self._reader.execute(pragma)
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None

    async def close(self) -> None:
        for conn in (self._reader, self._db):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()
        self._db = self._reader = None

    async def migrate(self) -> list[str]:
        db = self.db
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)"
        )
        applied = []
        for name, sql in migration_files("INTEGER PRIMARY KEY"):
            # Checked inside the write transaction: another process may have applied it.
            async with self.transaction():
                done = await self._rows("SELECT 1 FROM schema_migrations WHERE name = ?", (name,))
                if done:
                    continue
                for statement in split_sql(sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (name,)
                )
            applied.append(name)
        return applied

    async def ping(self) -> None:
        try:
            async with self.db.execute("SELECT 1 FROM schema_migrations LIMIT 1") as cur:
                await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing mid-way."""
        if IN_TRANSACTION.get():
            yield  # nested: part of the enclosing transaction
            return
        async with self._tx_lock:  # one connection: transactions must not interleave
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from None
            token = IN_TRANSACTION.set(True)
            try:
                yield
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            else:
                await db.execute("COMMIT")
            finally:
                IN_TRANSACTION.reset(token)

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement, inside the caller's transaction or as its own."""
        async with self.transaction():
            try:
                cur = await self.db.execute(sql, tuple(params))
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from None
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from None
            return cur.rowcount

    async def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        async with self.transaction():
            try:
                await self.db.executemany(sql, rows)
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from None
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from None

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        # Inside a transaction, its own connection: the reads must see its writes.
        conn = self._reader if self._reader is not None and not IN_TRANSACTION.get() else self.db
        try:  # one trip to aiosqlite's thread, not three (execute, fetchall, close)
            return list(await conn.execute_fetchall(sql, tuple(params)))
        except sqlite3.IntegrityError as exc:  # INSERT ... RETURNING, as PostgreSQL's driver
            raise Conflict(str(exc)) from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from None


class SqliteStore(KeyTables, UsageTables, OAuthTables, WalletTables, SqliteBase):
    """The embedded store: one SQLite file."""
