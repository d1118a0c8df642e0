"""The store's contract: records and the Protocol every database implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The database cannot be reached; requests that need it get 503."""


class Conflict(Exception):
    """A uniqueness rule would be broken (for example an org name already taken)."""


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class KeyWithDigest:
    key: ApiKey
    digest: str


class Store(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...

    async def create_org(self, org: Org) -> None: ...
    async def find_org(self, id_or_name: str) -> Org | None: ...
    async def list_orgs(self) -> list[Org]: ...

    async def insert_api_key(self, key: ApiKey, digest: str) -> None: ...
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...
    async def list_api_keys(self, org_id: str) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        """Mark a key revoked and record a credential event; False if unknown or already."""
        ...

    async def find_api_key_by_digest(self, digest: str) -> KeyWithDigest | None: ...
    async def record_last_used(self, seen: dict[str, float]) -> None:
        """Batch-write last_used_at (never moving it backwards)."""
        ...

    async def credential_events_since(self, seq: int) -> tuple[int, list[str]]:
        """Credential ids changed after ``seq``, and the newest seq seen."""
        ...
