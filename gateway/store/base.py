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
    max_requests: int | None = None
    rate_limit: int | None = None  # requests per minute
    allowed_ips: tuple[str, ...] = ()
    request_count: int = 0
    max_paid_requests: int | None = None
    max_spend: int | None = None
    paid_requests: int = 0
    spent: int = 0

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class KeyWithDigest:
    key: ApiKey
    digest: str
    valid_until: float | None = None  # set when matched by a rotated-out secret


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Counts for one (org, day, credential, route, status, client address)."""

    org_id: str
    day: str
    credential_id: str
    route: str
    status: int
    client_ip: str
    requests: int
    errors: int
    paid_requests: int


@dataclass(frozen=True, slots=True)
class ErrorRow:
    org_id: str
    at: float
    request_id: str
    method: str
    route: str
    status: int
    reason: str
    credential_id: str | None
    client_ip: str | None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class WalletEntry:
    seq: int
    org_id: str
    amount: int
    balance_after: int
    kind: str  # "credit", "debit" or "refund"
    at: float
    request_id: str | None = None
    credential_id: str | None = None
    route: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Debit:
    """The outcome of charging a paid call: a debit to refund on failure, or why not."""

    seq: int | None  # the debit row; None for a retry already paid for
    # "insufficient_funds", "max_paid_requests", "max_spend", "idempotency_mismatch",
    # "idempotency_in_progress"
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Membership:
    org: Org
    role: str


@dataclass(frozen=True, slots=True)
class OAuthClient:
    id: str
    name: str
    public: bool
    redirect_uris: tuple[str, ...]
    allowed_scopes: tuple[str, ...]
    grant_types: tuple[str, ...]
    created_at: float
    org_id: str | None = None
    allow_user_auth: bool = False
    disabled_at: float | None = None
    owner_org_id: str | None = None  # the organization that registered it


@dataclass(frozen=True, slots=True)
class Grant:
    """A user's consent for a client in one organization ("connected app")."""

    id: str
    user_id: str
    user_email: str
    org_id: str
    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    created_at: float
    updated_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class ClientWithSecret:
    client: OAuthClient
    secret_digest: str | None


@dataclass(frozen=True, slots=True)
class AuthCode:
    id: str
    client_id: str
    redirect_uri: str
    user_id: str
    org_id: str
    grant_id: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    created_at: float
    expires_at: float
    used_at: float | None = None


@dataclass(frozen=True, slots=True)
class OAuthToken:
    id: str
    kind: str  # "access" or "refresh"
    family_id: str
    client_id: str
    org_id: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    user_id: str | None = None
    grant_id: str | None = None
    used_at: float | None = None
    revoked_at: float | None = None

    def active_at(self, now: float) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class Consumed:
    """A single-use thing taken from the store: ``fresh`` is False on a replay."""

    fresh: bool


@dataclass(frozen=True, slots=True)
class ConsumedCode(Consumed):
    code: AuthCode


@dataclass(frozen=True, slots=True)
class ConsumedToken(Consumed):
    token: OAuthToken


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

    async def find_api_key_by_digest(self, digest: str, now: float) -> KeyWithDigest | None:
        """By current digest, or by the previous one while its rotation grace lasts."""
        ...

    async def list_api_keys_page(
        self, org_id: str, after: str | None, limit: int
    ) -> list[ApiKey]: ...
    async def update_api_key(self, key: ApiKey, at: float) -> None:
        """Write name, scopes, expiry and limits; evict the key from every cache."""
        ...

    async def rotate_api_key(
        self, key_id: str, digest: str, prefix: str, previous_valid_until: float, at: float
    ) -> None: ...
    async def delete_api_key(self, key_id: str, at: float) -> bool: ...
    async def record_last_used(
        self, seen: dict[str, float], counts: dict[str, int] | None = None
    ) -> None:
        """Batch-write last_used_at (never moving it backwards) and add request counts."""
        ...

    async def add_usage(self, rows: list[UsageRow]) -> None: ...
    async def usage(self, org_id: str, from_day: str, to_day: str) -> list[UsageRow]: ...
    async def add_errors(self, rows: list[ErrorRow], keep: int) -> None: ...
    async def errors_page(
        self, org_id: str, before_seq: int | None, limit: int
    ) -> list[ErrorRow]: ...

    async def credential_events_since(self, seq: int) -> tuple[int, list[str]]:
        """Credential ids changed after ``seq``, and the newest seq seen."""
        ...

    # --- wallets (metered routes) ---
    async def wallet_credit(self, org_id: str, amount: int, note: str | None, at: float) -> int:
        """Add credits; returns the new balance."""
        ...

    async def wallet_balance(self, org_id: str) -> int: ...
    async def wallet_debit(
        self,
        org_id: str,
        credential_id: str,
        cost: int,
        *,
        request_id: str,
        route: str,
        idempotency_key: str | None,
        fingerprint: str | None,
        at: float,
    ) -> Debit:
        """Atomically: check the key's caps, take ``cost`` from the wallet (never below
        zero) and record it. A retry with the same idempotency key and fingerprint of a
        call that succeeded (was settled) is not charged again."""
        ...

    async def wallet_settle(self, debit_seq: int) -> None:
        """Mark a debit's call as succeeded, so a retry of it is free."""
        ...

    async def wallet_refund(self, debit_seq: int, at: float) -> None: ...
    async def wallet_entries(
        self, org_id: str, before_seq: int | None, limit: int
    ) -> list[WalletEntry]: ...

    # --- people ---
    async def create_user(self, user: User, password_hash: str) -> None: ...
    async def find_user(self, email: str) -> tuple[User, str] | None:
        """The user with this (lower-cased) email and their password hash."""
        ...

    async def set_membership(self, user_id: str, org_id: str, role: str, at: float) -> None: ...
    async def memberships(self, user_id: str) -> list[Membership]: ...

    # --- OAuth clients and consents ---
    async def insert_client(self, client: OAuthClient, secret_digest: str | None) -> None: ...
    async def get_client(self, client_id: str) -> ClientWithSecret | None: ...
    async def list_clients(self) -> list[OAuthClient]: ...
    async def disable_client(self, client_id: str, at: float) -> bool:
        """Disable a client and revoke every token it holds."""
        ...

    async def list_clients_page(
        self, owner_org_id: str, after: str | None, limit: int
    ) -> list[OAuthClient]: ...
    async def update_client(self, client: OAuthClient) -> None: ...
    async def set_client_secret(self, client_id: str, secret_digest: str) -> None: ...
    async def delete_client(self, client_id: str, at: float) -> bool:
        """Delete a client, its grants, and revoke every token it holds."""
        ...

    async def list_grants_page(
        self, org_id: str, user_id: str | None, after: str | None, limit: int
    ) -> list[Grant]: ...
    async def get_grant(self, grant_id: str) -> Grant | None: ...
    async def revoke_grant(self, grant_id: str, at: float) -> None:
        """Mark the consent revoked and revoke every token issued under it."""
        ...

    async def upsert_grant(
        self,
        grant_id: str,
        user_id: str,
        org_id: str,
        client_id: str,
        scopes: tuple[str, ...],
        at: float,
    ) -> str:
        """Record a consent; returns the id of the (possibly existing) grant."""
        ...

    # --- codes and tokens: single-use things are consumed atomically ---
    async def insert_code(self, code: AuthCode, digest: str) -> None: ...
    async def consume_code(self, digest: str, at: float) -> ConsumedCode | None: ...
    async def insert_tokens(self, tokens: list[tuple[OAuthToken, str]]) -> None: ...
    async def find_token(self, digest: str) -> OAuthToken | None: ...
    async def consume_refresh_token(self, digest: str, at: float) -> ConsumedToken | None: ...
    async def revoke_token(self, token_id: str, at: float) -> None: ...
    async def revoke_family(self, family_id: str, at: float) -> None: ...
