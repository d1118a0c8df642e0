"""The shared store: PostgreSQL through an asyncpg connection pool.

Several gateway nodes use one database. Migrations run under an advisory lock,
so nodes starting together apply each one once. Every call is bounded by
``database.timeout``: a database that stops answering costs a request 503
after that long, never a hung request, and the pool reconnects by itself once
the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from typing import Any

import asyncpg

from gateway.store.records import Conflict, StoreUnavailable
from gateway.store.sql import SqlBase, migration_files, split_sql
from gateway.store.tables_keys import KeyTables
from gateway.store.tables_oauth import OAuthTables
from gateway.store.tables_usage import UsageTables
from gateway.store.tables_wallet import WalletTables

MIGRATION_LOCK = 0x6761_7465_7761_79  # "gateway": one advisory lock for all nodes
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
CONNECTION: contextvars.ContextVar[Conn | None] = contextvars.ContextVar(
    "pg_connection", default=None
)
# Failures that mean "the database cannot be reached right now", not "this SQL is wrong".
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)
UPDATED = re.compile(r"(\d+)$")


@lru_cache(maxsize=512)
def dialect(sql: str) -> str:
    """``?`` placeholders to ``$1, $2, ...`` (our SQL has no '?' inside literals)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def unavailable(conn: Conn, exc: BaseException) -> StoreUnavailable:
    """A call that timed out leaves its connection suspect: drop it at once, rather than
    let the pool wait another timeout for a cancel that cannot get through either."""
    if isinstance(exc, TimeoutError):
        conn.terminate()
    return StoreUnavailable(str(exc) or type(exc).__name__)


class PostgresBase(SqlBase):
    def __init__(self, dsn: str, *, min_size: int, max_size: int, timeout: float) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the store is not connected")
        return self._pool

    async def connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.timeout,  # to establish a connection
                command_timeout=self.timeout,
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL: {exc}") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except (TimeoutError, *UNAVAILABLE):
                pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        current = CONNECTION.get()
        if current is not None:
            yield current
            return
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn:
                yield conn
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if CONNECTION.get() is not None:
            yield  # nested: part of the enclosing transaction
            return
        async with self._connection() as conn:
            token = CONNECTION.set(conn)
            try:
                async with conn.transaction():
                    yield
            except UNAVAILABLE as exc:
                raise StoreUnavailable(str(exc) or type(exc).__name__) from None
            finally:
                CONNECTION.reset(token)

    async def migrate(self) -> list[str]:
        applied = []
        async with self._connection() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
                )
                done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
                for name, script in migration_files("BIGSERIAL PRIMARY KEY"):
                    if name in done:
                        continue
                    async with conn.transaction():
                        for statement in split_sql(script):
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, extract(epoch FROM now()))",
                            name,
                        )
                    applied.append(name)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return applied

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._connection() as conn:
            try:
                return list(await conn.fetch(dialect(sql), *params))
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
            except UNAVAILABLE as exc:
                raise unavailable(conn, exc) from None

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        async with self._connection() as conn:
            try:
                status = await conn.execute(dialect(sql), *params)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
            except UNAVAILABLE as exc:
                raise unavailable(conn, exc) from None
        found = UPDATED.search(status or "")
        return int(found.group(1)) if found else 0

    async def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        async with self.transaction(), self._connection() as conn:
            try:
                await conn.executemany(dialect(sql), rows)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(str(exc)) from None
            except UNAVAILABLE as exc:
                raise unavailable(conn, exc) from None


class PostgresStore(KeyTables, UsageTables, OAuthTables, WalletTables, PostgresBase):
    """The shared store: PostgreSQL for several gateway nodes."""

    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"  # each due callback claimed by one node
