"""Persistence: protocols by concern, one implementation per database."""

from __future__ import annotations

from gateway.config import Settings
from gateway.store.protocols import Store
from gateway.store.records import ApiKey, Conflict, Org, StoreUnavailable


def open_store(settings: Settings) -> Store:
    """The store named by ``database.url`` (not yet connected: call ``connect``)."""
    db = settings.database
    if db.is_postgres:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(
            db.url, min_size=min(db.pool_min, db.pool_max), max_size=db.pool_max, timeout=db.timeout
        )
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path)


__all__ = ["ApiKey", "Conflict", "Org", "Store", "StoreUnavailable", "open_store"]
