"""The store's contract, by concern: each Protocol is implemented by one table group
(``tables_*.py``), and ``Store`` is all of them over one database."""

from __future__ import annotations

import contextlib
from typing import Protocol

from gateway.store.records import (
    ApiKey,
    AuthCode,
    Callback,
    ClientWithSecret,
    ConsumedCode,
    ConsumedToken,
    Debit,
    ErrorRow,
    Event,
    Grant,
    KeptAnswer,
    KeyWithDigest,
    Membership,
    OAuthClient,
    OAuthToken,
    Org,
    Outcome,
    Subscription,
    UsageRow,
    User,
    WalletEntry,
)


class KeyStore(Protocol):
    """Organizations, API keys and the credential events that revoke them everywhere."""

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

    async def keys_expiring(self, now: float, until: float) -> list[ApiKey]:
        """Unrevoked keys that expire after ``now`` and by ``until``."""
        ...

    async def keys_near_quota(self, fraction: float) -> list[ApiKey]:
        """Unrevoked keys that used ``fraction`` of their ``max_requests`` or more."""
        ...

    async def list_api_keys_page(
        self, org_id: str, after: str | None, limit: int, environment: str | None = None
    ) -> list[ApiKey]: ...
    async def update_api_key(self, key: ApiKey, at: float) -> None:
        """Write name, scopes, expiry and limits; evict the key from every cache."""
        ...

    async def rotate_api_key(
        self, key_id: str, digest: str, prefix: str, previous_valid_until: float, at: float
    ) -> None: ...
    async def delete_api_key(self, key_id: str, at: float) -> bool: ...

    async def newest_credential_event(self) -> int:
        """The seq of the newest credential event (0 if none)."""
        ...

    async def credential_events_since(self, seq: int) -> list[tuple[int, str]]:
        """(event seq, credential id) of every change after ``seq``, oldest first."""
        ...

    # --- wallets (metered routes) ---


class UsageStore(Protocol):
    """What credentials were used for: counts, last use, daily usage, latest errors."""

    async def record_last_used(
        self, seen: dict[str, float], counts: dict[str, int] | None = None
    ) -> None:
        """Batch-write last_used_at (never moving it backwards) and add request counts."""
        ...

    async def add_usage(self, rows: list[UsageRow]) -> None: ...
    async def usage(
        self, org_id: str, from_day: str, to_day: str, environment: str = "live"
    ) -> list[UsageRow]:
        """One environment's daily counts (live, test)."""
        ...

    async def add_errors(self, rows: list[ErrorRow], keep: int) -> None: ...
    async def errors_page(
        self, org_id: str, before_seq: int | None, limit: int, environment: str = "live"
    ) -> list[ErrorRow]: ...


class WalletStore(Protocol):
    """Each organization's wallets, one per environment (live, test): credits, debits
    for metered calls, refunds."""

    async def wallet_credit(
        self, org_id: str, amount: int, note: str | None, at: float, environment: str = "live"
    ) -> int:
        """Add credits; returns the new balance."""
        ...

    async def wallet_balance(self, org_id: str, environment: str = "live") -> int: ...
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
        holder: str,
        at: float,
        environment: str = "live",
    ) -> Debit:
        """Atomically: check the key's caps, take ``cost`` from the wallet (never below
        zero) and record it. A retry with the same idempotency key and fingerprint of a
        call that succeeded (was settled) is not charged again: its ``Debit`` carries
        the answer kept for it."""
        ...

    async def wallet_settle(self, debit_seq: int, kept: KeptAnswer | None, at: float) -> None:
        """Mark a debit's call as succeeded and keep its answer (if any) for retries."""
        ...

    async def wallet_refund(self, debit_seq: int, at: float) -> None: ...
    async def wallet_release(self, holder: str, at: float) -> int:
        """Refund the pending debits of a process that is gone (``holder``, or every
        holder under a prefix ending in "/"); how many."""
        ...

    async def wallet_entries(
        self, org_id: str, before_seq: int | None, limit: int, environment: str = "live"
    ) -> list[WalletEntry]: ...

    # --- people ---


class OAuthStore(Protocol):
    """Users and memberships, OAuth clients, grants, codes and tokens."""

    async def token_apps(self, token_ids: list[str]) -> dict[str, str]:
        """Token id -> the name of the application it was issued to."""
        ...

    async def live_credentials(self, org_id: str, now: float) -> int:
        """How many of the organization's keys and tokens still authenticate."""
        ...

    async def list_users(self, org_id: str | None) -> list[User]:
        """Everyone, or the members of one organization, by email."""
        ...

    async def delete_org(self, org_id: str, at: float) -> None:
        """The organization and all that is its; its credentials evicted everywhere."""
        ...

    async def set_password(self, user_id: str, password_hash: str, at: float) -> None:
        """A new password; every session of the user ends."""
        ...

    async def disable_user(self, user_id: str, at: float) -> None:
        """No more sign-in: every session of the user ends and every token acting for
        them is revoked."""
        ...

    async def end_user_sessions(self, user_id: str, at: float) -> None: ...

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
        self, owner_org_id: str, after: str | None, limit: int, environment: str | None = None
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
    async def consume_code(
        self, digest: str, at: float, client_id: str | None = None
    ) -> ConsumedCode | None:
        """Mark a code used, atomically; with ``client_id``, only that client's code."""
        ...

    async def insert_tokens(self, tokens: list[tuple[OAuthToken, str]]) -> None: ...
    async def find_token(self, digest: str) -> OAuthToken | None: ...
    async def consume_refresh_token(self, digest: str, at: float) -> ConsumedToken | None: ...
    async def revoke_token(self, token_id: str, at: float) -> None: ...
    async def revoke_family(self, family_id: str, at: float) -> None: ...


class SessionStore(Protocol):
    """Login sessions the server can end, and consent requests answered once."""

    async def start_session(self, session_id: str, user_id: str, at: float) -> None: ...
    async def session_live(self, session_id: str) -> bool: ...
    async def end_session(self, session_id: str, at: float) -> None: ...
    async def end_user_sessions(self, user_id: str, at: float) -> None:
        """End every session of the user (a password change, the user disabled)."""
        ...

    async def answer_consent(self, request_id: str, at: float, forget_before: float) -> bool:
        """True the first time a consent request is answered, False on a replay;
        answers older than ``forget_before`` are forgotten."""
        ...


class EventStore(Protocol):
    """Events (an outbox), webhook subscriptions and their delivery attempts."""

    async def add_event(self, event: Event) -> bool:
        """Record it with a pending callback per subscription that wants it; False when
        an event with its ``once`` key exists already."""
        ...

    async def get_event(self, event_id: str) -> Event | None: ...
    async def events_page(
        self, org_id: str, environment: str, before_seq: int | None, limit: int
    ) -> list[Event]: ...
    async def insert_subscription(self, sub: Subscription) -> None: ...
    async def update_subscription(self, sub: Subscription) -> None: ...
    async def get_subscription(self, subscription_id: str) -> Subscription | None: ...
    async def list_subscriptions(self, org_id: str, environment: str) -> list[Subscription]: ...
    async def delete_subscription(self, subscription_id: str) -> bool: ...
    async def claim_callbacks(
        self, now: float, lease: float, limit: int
    ) -> list[tuple[Callback, Subscription, Event]]:
        """Due callbacks, each claimed by one node for ``lease`` seconds."""
        ...

    async def finish_callback(
        self, callback: Callback, outcome: Outcome, retry_at: float | None
    ) -> None: ...
    async def get_callback(self, callback_id: str) -> Callback | None: ...
    async def retry_callback(self, callback: Callback, at: float) -> Callback: ...
    async def callbacks_page(
        self,
        org_id: str,
        environment: str,
        before_seq: int | None,
        limit: int,
        *,
        status: str | None = None,
        subscription_id: str | None = None,
        event_type: str | None = None,
    ) -> list[Callback]: ...
    async def count_refusals(
        self, org_id: str, environment: str, minute: float, refusals: int
    ) -> int: ...
    async def set_low_balance_threshold(
        self, org_id: str, environment: str, threshold: int | None
    ) -> None: ...


class Store(KeyStore, UsageStore, WalletStore, OAuthStore, SessionStore, EventStore, Protocol):
    """One database with every table group."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """What runs inside is one transaction: a change and the events it causes."""
        ...

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        ...
