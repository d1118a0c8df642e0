"""The store's records: what it reads and writes, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass


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
    environment: str = "live"  # or "test" (``gateway.accounts.environments``)

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
    environment: str = "live"


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
    environment: str = "live"


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

    seq: int | None  # the debit row; None for a retry already paid for, or a refusal
    # "insufficient_funds", "max_paid_requests", "max_spend", "idempotency_mismatch",
    # "idempotency_in_progress"
    refused: str | None = None
    kept: KeptAnswer | None = None  # a retry's: the first call's answer


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """The answer to a paid call made with an Idempotency-Key, kept to be replayed to
    its retries."""

    body_digest: str | None  # SHA-256 of the request body; None if it was not read whole
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes | None  # None: too large to keep


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    created_at: float
    disabled_at: float | None = None


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
    allowed_origins: tuple[str, ...] = ()  # CORS, besides its redirect URIs' origins
    environment: str = "live"  # its tokens' environment


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
    environment: str = "live"  # its client's

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


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to an organization's credentials or money, recorded
    with the change that caused it (``gateway.events``)."""

    id: str
    org_id: str
    environment: str
    type: str
    data: str  # a JSON object
    at: float
    once: str | None = None  # events sharing this key are recorded once
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Subscription:
    """Where an organization's events are sent (a webhook endpoint)."""

    id: str
    org_id: str
    environment: str
    url: str
    events: tuple[str, ...]
    description: str
    secret: str
    created_at: float
    previous_secret: str | None = None
    previous_until: float | None = None
    failing_since: float | None = None
    disabled_at: float | None = None


@dataclass(frozen=True, slots=True)
class Callback:
    """One attempt to deliver an event to a subscription."""

    id: str
    event_id: str
    subscription_id: str
    org_id: str
    environment: str
    event_type: str
    attempt: int
    status: str  # pending, succeeded, failed
    due_at: float
    attempted_at: float | None = None
    http_status: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    next_retry_at: float | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt got."""

    http_status: int | None
    error: str | None
    latency_ms: float
    at: float

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300
