"""Authentication: turn the credential on a request into a Principal.

Credentials are read from ``X-API-Key: <key>`` or ``Authorization: Bearer
<token>`` (RFC 6750 §2.1). Which kind of secret it is follows from its prefix,
so an API key works in either header and OAuth tokens share this path.

Verified credentials are cached in process for ``cache.credential_ttl``
seconds; a background watcher reads the store's credential events and evicts
revoked credentials within ``cache.poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway import crypto
from gateway.errors import BadRequest, ServiceUnavailable, Unauthorized
from gateway.http.framing import field_lines
from gateway.metering.limits import KeyLimits
from gateway.node.shared import Revocations
from gateway.pipeline.headers import FieldView
from gateway.store import Store, StoreUnavailable
from gateway.wait import Wait

log = logging.getLogger("gateway.authn")
EVENT_OVERLAP = 256  # credential events re-read on every poll
# Optional whitespace around a field value is SP and HTAB only (RFC 9110 §5.6.3): any
# other character (a no-break space, ...) is part of the credential, which is then unknown.
OWS = " \t"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one credential, one organization, a set of scopes."""

    credential_id: str
    org_id: str
    scopes: frozenset[str]
    scope_header: str  # the scopes as sent upstream in X-Scopes
    method: str  # "api_key" or "oauth"
    expires_at: float | None = None
    client_id: str | None = None
    user_id: str | None = None
    limits: KeyLimits | None = None
    request_count: int = 0  # as stored when this principal was loaded (for quotas)
    environment: str = "live"  # or "test": which targets it reaches, which wallet it pays from

    # What the upstream learns about the caller, fixed for a principal: made once.
    identity: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    identity_lines: bytes = field(init=False, repr=False, compare=False)  # as head lines

    def __post_init__(self) -> None:
        fields = [
            ("X-Org-Id", self.org_id),
            ("X-Scopes", self.scope_header),
            ("X-Auth-Method", self.method),
            ("X-Credential-Id", self.credential_id),
            ("X-Environment", self.environment),
        ]
        if self.client_id:
            fields.append(("X-Client-Id", self.client_id))
        if self.user_id:
            fields.append(("X-User-Id", self.user_id))
        object.__setattr__(self, "identity", tuple(fields))
        object.__setattr__(self, "identity_lines", field_lines(fields))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


Lookup = Callable[[str], Awaitable[Principal | None]]


def read_credential(headers: FieldView, access_token_header: bool = False) -> str | None:
    """The one credential a request carries, or None; 400 when it carries two."""
    api_keys = headers.getall("X-API-Key", ())
    auths = headers.getall("Authorization", ())
    legacy = headers.getall("access_token", ()) if access_token_header else ()
    if len(api_keys) > 1 or len(auths) > 1 or len(legacy) > 1:
        raise BadRequest("Send one credential: a header was repeated.")
    found = api_keys[0].strip(OWS) if api_keys else None
    for other in (bearer_token(auths[0]) if auths else None,
                  legacy[0].strip(OWS) if legacy else None):  # fmt: skip
        if other is not None:
            if found is not None:
                raise BadRequest("Send one credential: X-API-Key, Authorization or access_token.")
            found = other
    return found


def bearer_token(value: str) -> str | None:
    scheme, _, token = value.strip(OWS).partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic, ...) is not ours to judge
    return token.strip(OWS)


class CredentialCache:
    """digest -> Principal, bounded in size and age; evictable by credential id. Before
    each lookup it catches up with the node's revocations (one shared-memory read
    when there is nothing new)."""

    def __init__(self, ttl: float, max_entries: int, revocations: Revocations) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.revocations = revocations
        self.seen = revocations.seq()
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._by_id: dict[str, set[str]] = {}
        # Bumped by every eviction: a lookup that started before one must not cache what
        # it read, which may be the credential just revoked.
        self.evictions = 0

    def catch_up(self) -> None:
        if self.revocations.seq() == self.seen:
            return
        self.seen, changed = self.revocations.since(self.seen)
        if changed is None:
            self.clear()
            return
        for credential_id in changed:
            self.evict(credential_id)

    def get(self, digest: str, now: float) -> Principal | None:
        self.catch_up()
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now >= entry[1]:
            self._drop(digest)
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal, now: float) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
        self._entries[digest] = (principal, now + self.ttl)
        # A rotated key may be cached under its old and its new secret at once.
        self._by_id.setdefault(principal.credential_id, set()).add(digest)

    def evict(self, credential_id: str) -> None:
        self.evictions += 1
        for digest in self._by_id.pop(credential_id, set()).copy():
            self._drop(digest)

    def clear(self) -> None:
        self.evictions += 1
        self._entries.clear()
        self._by_id.clear()

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            digests = self._by_id.get(entry[0].credential_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_id[entry[0].credential_id]

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    """Resolves a raw secret to a Principal through the cache and the store."""

    def __init__(
        self, store: Store, cache: CredentialCache, *, access_token_header: bool = False
    ) -> None:
        self.store = store
        self.cache = cache
        self.access_token_header = access_token_header
        self._lookups: dict[str, Lookup] = {crypto.API_KEY_PREFIX: self._api_key}
        self._valid: dict[str, Callable[[str], bool]] = {
            crypto.API_KEY_PREFIX: crypto.well_formed_key
        }

    def register(
        self, prefix: str, lookup: Lookup, valid: Callable[[str], bool] | None = None
    ) -> None:
        """Let another kind of secret (OAuth tokens) share this path. ``valid`` is the
        cheap local check before any lookup (default: our prefix-and-checksum format)."""
        self._lookups[prefix] = lookup
        self._valid[prefix] = valid or (lambda secret: crypto.well_formed(secret, prefix))

    def authenticate(self, headers: FieldView) -> Principal | Wait[Principal]:
        """The caller; a wait for the store when the credential is not cached. 401 when
        there is no secret, or it is unknown, revoked or expired."""
        secret = read_credential(headers, self.access_token_header)
        if not secret:
            raise Unauthorized("missing")
        digest = crypto.digest(secret)
        now = time.time()
        principal = self.cache.get(digest, now)
        if principal is None:
            return Wait(self._look_up(secret, digest, now))
        if principal.expires_at is not None:
            self._unexpired(principal, now)
        return principal

    async def _look_up(self, secret: str, digest: str, now: float) -> Principal:
        generation = self.cache.evictions
        principal = await self._found(self._lookup_for(secret), digest)
        if self.cache.evictions == generation:
            self.cache.put(digest, principal, now)
        return self._unexpired(principal, time.time())

    def _unexpired(self, principal: Principal, now: float) -> Principal:
        if principal.expired(now):
            self.cache.evict(principal.credential_id)
            raise Unauthorized("expired")
        return principal

    def recheck(self, headers: FieldView) -> Callable[[], Awaitable[Principal]]:
        """For a credential that stays in use (an open WebSocket): read it again from the
        store, past the cache; Unauthorized once it is revoked or expired. Holds the
        credential's digest, never the secret."""
        secret = read_credential(headers, self.access_token_header) or ""
        digest = crypto.digest(secret)
        lookup = self._lookup_for(secret)

        async def again() -> Principal:
            return self._unexpired(await self._found(lookup, digest), time.time())

        return again

    def _lookup_for(self, secret: str) -> Lookup:
        for prefix, lookup in self._lookups.items():
            if secret.startswith(prefix) and self._valid[prefix](secret):
                return lookup
        raise Unauthorized("malformed")

    async def _found(self, lookup: Lookup, digest: str) -> Principal:
        try:
            principal = await lookup(digest)
        except StoreUnavailable:
            log.warning("credential store unavailable")
            raise ServiceUnavailable() from None
        if principal is None:
            raise Unauthorized("unknown")
        return principal

    async def _api_key(self, digest: str) -> Principal | None:
        found = await self.store.find_api_key_by_digest(digest, time.time())
        if found is None or not crypto.same_digest(found.digest, digest):
            return None
        key = found.key
        if key.revoked_at is not None:
            raise Unauthorized("revoked")
        return Principal(
            credential_id=key.id,
            org_id=key.org_id,
            scopes=frozenset(key.scopes),
            scope_header=" ".join(key.scopes),
            method="api_key",
            # A secret rotated out works until its grace ends, wherever it is cached.
            expires_at=min(
                (t for t in (key.expires_at, found.valid_until) if t is not None), default=None
            ),
            limits=KeyLimits.of(key.max_requests, key.rate_limit, key.allowed_ips),
            request_count=key.request_count,
            environment=key.environment,
        )


class RevocationWatcher:
    """Reads the store's credential events and publishes the changed credentials to
    the node (``Revocations``), whose workers evict them: right after a call of this
    worker that may have changed one (``publish_changes``), and every ``interval``
    for changes made elsewhere (another node, the CLI)."""

    def __init__(self, store: Store, revocations: Revocations, interval: float) -> None:
        self.store = store
        self.revocations = revocations
        self.interval = interval
        self._seq = 0
        self._published: set[int] = set()  # event seqs within the overlap, already out

    async def start(self) -> None:
        self._seq = await self.store.newest_credential_event()

    async def publish_changes(self) -> None:
        # Re-read a window of recent events: on PostgreSQL a transaction that took a lower
        # sequence number can commit after one that took a higher number.
        since = max(0, self._seq - EVENT_OVERLAP)
        events = await self.store.credential_events_since(since)
        self.revocations.publish(c for seq, c in events if seq not in self._published)
        if events:
            self._seq = max(self._seq, events[-1][0])
        self._published = {seq for seq, _ in events if seq > self._seq - EVENT_OVERLAP}

    async def run(self, cache: CredentialCache) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish_changes()
            except StoreUnavailable:
                # Cannot see revocations: drop the cache so nothing stale is trusted.
                cache.clear()
            except Exception:
                log.exception("revocation watcher failed; clearing the credential cache")
                cache.clear()
