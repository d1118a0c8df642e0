"""Request and response bodies of the management API, as pydantic models.

The same models validate what clients send and describe, in the OpenAPI
document, what the API answers; the schemathesis test keeps the two honest.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)


def printable_name(name: str) -> str:
    name = name.strip()
    if not name or not name.isprintable():
        raise ValueError("1 to 200 printable characters, not only spaces")
    return name


def epoch_seconds(moment: datetime | None) -> datetime | None:
    """A moment the gateway can store: naive times are UTC; the year must be real."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError("out of range") from None
    return moment


def one_expiry(expires_at: datetime | None, info: ValidationInfo) -> datetime | None:
    """A field validator (not a model one) so that the error names ``expires_at``."""
    if expires_at is not None and info.data.get("ttl") is not None:
        raise ValueError("give ttl or expires_at, not both")
    return expires_at


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(printable_name)]
Moment = Annotated[datetime, AfterValidator(epoch_seconds)]
Scope = Annotated[str, Field(min_length=1, max_length=100)]
GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
Timestamp = Annotated[str, Field(description="RFC 3339, UTC", examples=["2026-11-23T07:35:52Z"])]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsIn(Body):
    max_requests: int | None = Field(None, ge=1, le=10**12, description="total quota")
    rate_limit: int | None = Field(None, ge=1, le=10**9, description="requests per minute")
    allowed_ips: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=100, description="CIDRs; other addresses get 403"
    )
    max_paid_requests: int | None = Field(None, ge=1, le=10**12, description="paid calls")
    max_spend: int | None = Field(None, ge=1, le=10**15, description="wallet credits")

    @field_validator("allowed_ips")
    @classmethod
    def _cidrs(cls, cidrs: list[str] | None) -> list[str] | None:
        for cidr in cidrs or ():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return cidrs


Environment = Literal["live", "test"]


class KeyCreate(Body):
    name: Name
    environment: Environment = Field("live", description="test keys reach test targets only")
    scopes: list[Scope] = Field(min_length=1, max_length=100)
    ttl: int | None = Field(None, ge=1, le=10 * 365 * 86400, description="seconds")
    expires_at: Moment | None = None
    limits: LimitsIn | None = None

    @field_validator("expires_at")
    @classmethod
    def _one_expiry(cls, expires_at: datetime | None, info: ValidationInfo) -> datetime | None:
        return one_expiry(expires_at, info)


class KeyPatch(Body):
    name: Name | None = None
    scopes: list[Scope] | None = Field(None, min_length=1, max_length=100)
    ttl: int | None = Field(None, ge=1, le=10 * 365 * 86400)
    expires_at: Moment | None = Field(None, description="null removes the expiry")
    limits: LimitsIn | None = None

    @field_validator("expires_at")
    @classmethod
    def _one_expiry(cls, expires_at: datetime | None, info: ValidationInfo) -> datetime | None:
        return one_expiry(expires_at, info)


class LimitsOut(BaseModel):
    max_requests: int | None
    rate_limit: int | None
    allowed_ips: list[str]
    max_paid_requests: int | None
    max_spend: int | None


class KeyOut(BaseModel):
    id: str
    org_id: str
    name: str
    prefix: str
    environment: Environment
    scopes: list[str]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None
    limits: LimitsOut
    requests: int = Field(description="requests made with this key (flushed in batches)")
    paid_requests: int = Field(description="paid calls charged to the wallet")
    spent: int = Field(description="wallet credits spent by this key")


class KeyCreated(KeyOut):
    key: str = Field(description="the raw key: shown this once, stored only as a digest")


class KeyPage(BaseModel):
    data: list[KeyOut]
    next_cursor: str | None


class ClientCreate(Body):
    name: Name
    environment: Environment = Field("live", description="the environment of its tokens")
    redirect_uris: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20
    )
    scopes: list[Scope] = Field(min_length=1, max_length=100)
    public: bool = False
    grant_types: list[GrantType] | None = Field(None, min_length=1)
    allowed_origins: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list,
        max_length=20,
        description="origins a browser app calls the token endpoint from (CORS), besides "
        "those of a public client's redirect URIs",
    )


class ClientPatch(Body):
    name: Name | None = None
    redirect_uris: list[Annotated[str, Field(max_length=2000)]] | None = Field(None, max_length=20)
    scopes: list[Scope] | None = Field(None, min_length=1, max_length=100)
    allowed_origins: list[Annotated[str, Field(max_length=300)]] | None = Field(None, max_length=20)


class ClientOut(BaseModel):
    client_id: str
    name: str
    public: bool
    environment: Environment
    redirect_uris: list[str]
    allowed_scopes: list[str]
    grant_types: list[str]
    org_id: str | None
    allow_user_auth: bool
    allowed_origins: list[str]
    created_at: Timestamp
    disabled_at: Timestamp | None


class ClientCreated(ClientOut):
    client_secret: str | None = Field(description="shown this once; null for public clients")


class ClientPage(BaseModel):
    data: list[ClientOut]
    next_cursor: str | None


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str


class GrantOut(BaseModel):
    id: str
    user_id: str
    user_email: str
    client_id: str
    client_name: str
    scopes: list[str]
    created_at: Timestamp
    updated_at: Timestamp


class GrantPage(BaseModel):
    data: list[GrantOut]
    next_cursor: str | None


class RouteOut(BaseModel):
    methods: list[str] | None = Field(description="null: every method")
    path: str
    upstream: str


class ScopeOut(BaseModel):
    name: str
    description: str
    routes: list[RouteOut]


class ScopeList(BaseModel):
    data: list[ScopeOut]


class Counts(BaseModel):
    requests: int
    errors: int
    paid_requests: int


class Group(Counts):
    group: str


class Stats(Counts):
    environment: Environment
    groups: list[Group]


class ErrorEntry(BaseModel):
    at: Timestamp
    request_id: str
    method: str
    route: str
    status: int
    reason: str
    credential_id: str | None
    client_ip: str | None


class ErrorPage(BaseModel):
    data: list[ErrorEntry]
    next_cursor: str | None


class WalletOut(BaseModel):
    org_id: str
    environment: Environment
    balance: int


class WalletCredit(Body):
    amount: int = Field(ge=1, le=1_000_000_000, description="test credits to add (free)")
    note: Annotated[str, Field(max_length=200)] | None = None


class WalletEntryOut(BaseModel):
    seq: int
    amount: int = Field(description="credits added (+) or spent (-)")
    balance_after: int
    kind: Literal["credit", "debit", "refund"]
    at: Timestamp
    request_id: str | None
    credential_id: str | None
    route: str | None
    note: str | None


class WalletPage(BaseModel):
    data: list[WalletEntryOut]
    next_cursor: str | None


EventType = Literal[
    "key.created", "key.rotated", "key.revoked", "key.expiring", "quota.warning",
    "quota.exhausted", "rate_limit.exceeded", "wallet.low", "grant.created", "grant.revoked",
    "client.secret_rotated", "refresh_token.reuse_detected", "auth.failures_spike",
]  # fmt: skip
Url = Annotated[str, Field(min_length=1, max_length=2000)]


class SubscriptionCreate(Body):
    url: Url
    events: list[EventType] = Field(min_length=1, max_length=20)
    description: Annotated[str, Field(max_length=200)] = ""
    environment: Environment = "live"


class SubscriptionPatch(Body):
    url: Url | None = None
    events: list[EventType] | None = Field(None, min_length=1, max_length=20)
    description: Annotated[str, Field(max_length=200)] | None = None
    enabled: bool | None = Field(None, description="false pauses it; true resumes a disabled one")


class SubscriptionOut(BaseModel):
    id: str
    environment: Environment
    url: str
    events: list[str]
    description: str
    created_at: Timestamp
    failing_since: Timestamp | None
    disabled: bool
    disabled_at: Timestamp | None


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="whsec_...: shown this once; signs every delivery")


class SubscriptionList(BaseModel):
    data: list[SubscriptionOut]


class EventOut(BaseModel):
    id: str
    type: str
    environment: Environment
    timestamp: Timestamp
    data: dict[str, Any]


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class CallbackOut(BaseModel):
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    attempt: int
    status: Literal["pending", "succeeded", "failed"]
    due_at: Timestamp
    attempted_at: Timestamp | None
    http_status: int | None
    error: str | None
    latency_ms: float | None
    next_retry_at: Timestamp | None


class CallbackPage(BaseModel):
    data: list[CallbackOut]
    next_cursor: str | None


class ThresholdPatch(Body):
    low_balance_threshold: int | None = Field(ge=0, le=10**12, description="null: no alert")


class WalletSettings(WalletOut):
    low_balance_threshold: int | None


class Problem(BaseModel):
    error: str
    message: str
    field: str | None = None
